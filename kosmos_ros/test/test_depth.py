# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""3D lifting against analytic values of synthetic scenes with known geometry."""

from types import SimpleNamespace

import numpy as np
import pytest

from kosmos_ros.datatypes import PixelBox
from kosmos_ros.depth import closest_by_stamp, depth_from_message, Intrinsics, lift_box
from kosmos_ros.errors import ImageError

pytestmark = pytest.mark.fast  # in make test-fast: no DDS, no model

W, H = 640, 480
FX, FY, CX, CY = 500.0, 520.0, 319.5, 239.5
K = Intrinsics(FX, FY, CX, CY, W, H)
TOL = 1e-6


def camera_info(width=W, height=H, k=(FX, 0, CX, 0, FY, CY, 0, 0, 1)):
    return SimpleNamespace(width=width, height=height, k=list(k))


def depth_msg(metres, encoding='32FC1', bigendian=False, pad=0):
    if encoding == '16UC1':
        values = np.nan_to_num(metres * 1000.0, nan=0.0).round().astype(np.uint16)
    else:
        values = metres.astype(np.float32)
    values = values.astype(values.dtype.newbyteorder('>' if bigendian else '<'))
    h, w = values.shape
    row = values.reshape(h, -1).view(np.uint8)
    data = np.zeros((h, row.shape[1] + pad), np.uint8)
    data[:, :row.shape[1]] = row
    return SimpleNamespace(width=w, height=h, encoding=encoding, is_bigendian=int(bigendian),
                           step=row.shape[1] + pad, data=data.reshape(-1))


def expected_center(box, z, k=K):
    u, v = (box.x1 + box.x2) / 2 - 0.5, (box.y1 + box.y2) / 2 - 0.5
    return ((u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z)


@pytest.mark.parametrize('encoding', ['32FC1', '16UC1'])
def test_plane_at_known_distance(encoding):
    depth = depth_from_message(depth_msg(np.full((H, W), 2.0), encoding))
    box = PixelBox(200, 100, 300, 220)
    lifted = lift_box(box, depth, K, (W, H))
    assert lifted.box is not None, lifted.reason
    assert lifted.box.center == pytest.approx(expected_center(box, 2.0), abs=TOL)
    assert lifted.box.size == pytest.approx((100 * 2.0 / FX, 120 * 2.0 / FY, 0.0), abs=TOL)
    assert lifted.box.center == pytest.approx((-0.28, 2.0 * (159.5 - CY) / FY, 2.0), abs=TOL)


def test_object_in_front_of_background():
    metres = np.full((H, W), 3.0)
    box = PixelBox(400, 300, 480, 400)
    metres[300:400, 400:480] = 1.25  # the object exactly fills the box
    lifted = lift_box(box, depth_from_message(depth_msg(metres)), K, (W, H))
    assert lifted.box.center == pytest.approx(expected_center(box, 1.25), abs=TOL)
    assert lifted.box.size[:2] == pytest.approx((80 * 1.25 / FX, 100 * 1.25 / FY), abs=TOL)
    # A loose box (twice as large) still finds the object: the median of its inner region.
    loose = PixelBox(380, 275, 500, 425)
    assert lift_box(loose, depth_from_message(depth_msg(metres)), K, (W, H)).box.center[2] == \
        pytest.approx(1.25)


def test_tilted_plane_gives_the_depth_at_the_centre():
    rows = np.linspace(1.0, 3.0, H)[:, None].repeat(W, 1)  # depth grows down the image
    box = PixelBox(100, 200, 200, 281)
    lifted = lift_box(box, depth_from_message(depth_msg(rows)), K, (W, H))
    centre_depth = float(np.median(rows[220:261, 125:175]))
    assert lifted.box.center[2] == pytest.approx(centre_depth, rel=1e-6)
    spread = rows[200:281, 100:200]
    assert lifted.box.size[2] == pytest.approx(np.percentile(spread, 90) -
                                               np.percentile(spread, 10), rel=1e-6)


@pytest.mark.parametrize('fill, encoding', [(0.0, '16UC1'), (np.nan, '32FC1'),
                                            (np.inf, '32FC1'), (25.0, '32FC1'),
                                            (0.02, '32FC1')])
def test_invalid_depth_gives_no_3d_and_a_reason(fill, encoding):
    metres = np.full((H, W), fill)
    lifted = lift_box(PixelBox(10, 10, 110, 110), depth_from_message(depth_msg(metres, encoding)),
                      K, (W, H))
    assert lifted.box is None
    assert 'valid depth pixels' in lifted.reason and 'need 5' in lifted.reason


def test_lower_resolution_registered_depth_is_scaled():
    box = PixelBox(200, 100, 300, 220)
    full = lift_box(box, depth_from_message(depth_msg(np.full((H, W), 2.0))), K, (W, H))
    half = lift_box(box, depth_from_message(depth_msg(np.full((H // 2, W // 2), 2.0))), K,
                    (W, H))
    assert half.box.center == pytest.approx(full.box.center, abs=1e-6)
    assert half.box.size == pytest.approx(full.box.size, abs=1e-6)


def test_depth_messages_are_decoded_or_refused():
    metres = np.arange(12, dtype=np.float32).reshape(3, 4) / 4 + 0.5
    for encoding, bigendian, pad in (('32FC1', False, 0), ('32FC1', True, 6),
                                     ('16UC1', False, 2), ('16UC1', True, 0)):
        got = depth_from_message(depth_msg(metres, encoding, bigendian, pad))
        assert got == pytest.approx(metres, abs=1e-3), (encoding, bigendian, pad)
    with pytest.raises(ImageError, match="unsupported depth encoding 'rgb8'"):
        depth_from_message(SimpleNamespace(width=2, height=2, encoding='rgb8', step=6,
                                           is_bigendian=0, data=bytes(12)))
    with pytest.raises(ImageError, match='do not match'):
        depth_from_message(SimpleNamespace(width=2, height=2, encoding='32FC1', step=8,
                                           is_bigendian=0, data=bytes(10)))
    with pytest.raises(ImageError, match='empty'):
        depth_from_message(SimpleNamespace(width=0, height=2, encoding='32FC1', step=0,
                                           is_bigendian=0, data=b''))


def test_intrinsics_from_camera_info():
    assert Intrinsics.from_camera_info(camera_info()) == K
    with pytest.raises(ImageError, match='no usable intrinsics'):
        Intrinsics.from_camera_info(camera_info(k=(0,) * 9))
    with pytest.raises(ImageError, match='expected 9'):
        Intrinsics.from_camera_info(camera_info(k=(1, 2, 3)))


def test_stamp_matching():
    depth = [(10.00, 'a'), (10.10, 'b'), (10.20, 'c')]
    assert closest_by_stamp(10.09, depth, 0.02) == ('b', '')
    item, reason = closest_by_stamp(10.5, depth, 0.05)
    assert item is None and '300 ms from the colour image (tolerance 50 ms)' in reason
    assert closest_by_stamp(1.0, [], 0.1) == (None, 'no depth image received')


def test_depth_settings_are_checked():
    from kosmos_ros.depth import DepthSettings
    assert DepthSettings() == DepthSettings(0.05, 0.1, 10.0, 0.5)
    with pytest.raises(ValueError, match='depth_tolerance must be at least 0; got -1'):
        DepthSettings(depth_tolerance=-1.0)
    with pytest.raises(ValueError, match=r'depth_min \(5 m\) must be below depth_max \(1 m\)'):
        DepthSettings(depth_min=5, depth_max=1)
    with pytest.raises(ValueError, match='depth_inner_fraction must be at least 0.05; got 0.0'):
        DepthSettings(depth_inner_fraction=0.0)
    with pytest.raises(ValueError, match='depth_tolerance must be a finite number; got nan'):
        DepthSettings(depth_tolerance=float('nan'))
