# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Image messages to frames, and frames to pixel values, against the reference paths."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from rosbags.image import message_to_cvimage

from kosmos_ros.errors import ImageError
from kosmos_ros.images import frame_from_array, frame_from_message
from kosmos_ros.preprocess import Preprocessor


def image_msg(array, encoding, step=None, bigendian=0):
    h, w = array.shape[:2]
    row = array.reshape(h, -1).view(np.uint8)
    step = step or row.shape[1]
    padded = np.zeros((h, step), np.uint8)
    padded[:, :row.shape[1]] = row
    return SimpleNamespace(height=h, width=w, encoding=encoding, step=step,
                           is_bigendian=bigendian, data=padded.reshape(-1))


def compressed_msg(payload, fmt='jpeg'):
    return SimpleNamespace(format=fmt, data=np.frombuffer(payload, np.uint8))


@pytest.fixture(scope='module')
def rgb(photos):
    return photos['chelsea']


def _encode(rgb, encoding):
    """Return ``rgb`` as the pixel array of ``encoding`` (colour converted by OpenCV)."""
    convert = {
        'rgb8': lambda: rgb,
        'bgr8': lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
        'rgba8': lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA),
        'bgra8': lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA),
        'mono8': lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY),
        'mono16': lambda: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257,
        'rgb16': lambda: rgb.astype(np.uint16) * 257,
        'bayer_rggb8': lambda: _bayer_rggb(rgb),
        'yuv422': lambda: cv2.cvtColor(np.ascontiguousarray(rgb[:, :rgb.shape[1] // 2 * 2]),
                                       cv2.COLOR_RGB2YUV_UYVY),
    }
    return convert[encoding]()


def _bayer_rggb(rgb):
    h, w = rgb.shape[:2]
    out = np.zeros((h, w), np.uint8)
    out[0::2, 0::2] = rgb[0::2, 0::2, 0]
    out[0::2, 1::2] = rgb[0::2, 1::2, 1]
    out[1::2, 0::2] = rgb[1::2, 0::2, 1]
    out[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return out


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16',
                                      'rgb16', 'bayer_rggb8', 'yuv422'])
@pytest.mark.parametrize('pad', [0, 13])
def test_frames_equal_rosbags_image_conversion(rgb, encoding, pad):
    array = _encode(rgb, encoding)
    msg = image_msg(array, encoding)
    if pad:
        msg = image_msg(array, encoding, step=msg.step + pad)
    frame = frame_from_message(msg)
    expected = message_to_cvimage(image_msg(array, encoding), 'rgb8')
    assert frame.to_rgb().shape == expected.shape
    assert np.array_equal(frame.to_rgb(), expected)


def test_direct_encodings_are_zero_copy_views(rgb):
    msg = image_msg(rgb, 'rgb8', step=rgb.shape[1] * 3 + 8)
    frame = frame_from_message(msg)
    assert np.shares_memory(frame.array, msg.data)
    assert not frame.array.flags.writeable


@pytest.mark.parametrize('fmt, ext', [('jpeg', '.jpg'), ('png', '.png'),
                                      ('rgb8; jpeg compressed bgr8', '.jpg')])
def test_compressed_frames_decode_like_rosbags_image(rgb, fmt, ext):
    ok, payload = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    msg = compressed_msg(payload.tobytes(), fmt)
    assert np.array_equal(frame_from_message(msg).to_rgb(), message_to_cvimage(msg, 'rgb8'))


def test_grayscale_jpeg_becomes_three_channels(rgb):
    ok, payload = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    frame = frame_from_message(compressed_msg(payload.tobytes()))
    assert frame.array.shape == rgb.shape


@pytest.mark.parametrize('encoding', ['32FC1', '16UC3', '8SC1', '8UC3', 'nv12', 'weird'])
def test_unsupported_encodings_are_refused_by_name(encoding):
    msg = SimpleNamespace(height=4, width=4, encoding=encoding, step=16, is_bigendian=0,
                          data=np.zeros(64, np.uint8))
    with pytest.raises(ImageError, match=f'unsupported image encoding {encoding!r}'):
        frame_from_message(msg)


@pytest.mark.parametrize('fields, message', [
    (dict(width=0, height=0, step=0, data=b''), r'empty \(0x0\)'),
    (dict(width=4, height=0, step=12, data=b''), r'empty \(4x0\)'),
    (dict(width=4, height=4, step=12, data=bytes(47)), 'data holds 47 bytes but step'),
    (dict(width=4, height=4, step=12, data=bytes(49)), 'data holds 49 bytes'),
    (dict(width=4, height=4, step=10, data=bytes(40)), 'step 10 is smaller than width'),
    (dict(width=10000, height=10000, step=30000, data=bytes(16)), 'exceeds the limit'),
])
def test_inconsistent_images_are_refused(fields, message):
    msg = SimpleNamespace(encoding='rgb8', is_bigendian=0, **fields)
    with pytest.raises(ImageError, match=message):
        frame_from_message(msg)


def test_corrupt_and_truncated_compressed_images_are_refused(rgb):
    ok, jpeg = cv2.imencode('.jpg', rgb)
    ok, png = cv2.imencode('.png', rgb)
    jpeg, png = jpeg.tobytes(), png.tobytes()
    with pytest.raises(ImageError, match='truncated JPEG'):
        frame_from_message(compressed_msg(jpeg[:len(jpeg) // 2]))
    with pytest.raises(ImageError, match='corrupt compressed image'):
        frame_from_message(compressed_msg(png[:len(png) // 2], 'png'))
    with pytest.raises(ImageError, match='neither JPEG nor PNG'):
        frame_from_message(compressed_msg(b'GIF89a' + bytes(100), 'gif'))
    with pytest.raises(ImageError, match='no data'):
        frame_from_message(compressed_msg(b''))
    garbage = jpeg[:20] + bytes(200) + b'\xff\xd9'
    with pytest.raises(ImageError, match='corrupt|cannot decode'):
        frame_from_message(compressed_msg(garbage))


def test_frame_from_array_validation(rgb):
    assert frame_from_array(rgb).order == 'rgb'
    assert frame_from_array(rgb[:, :, 0]).order == 'mono'
    with pytest.raises(ImageError, match='uint8'):
        frame_from_array(rgb.astype(np.float32))
    with pytest.raises(ImageError, match='does not hold bgra'):
        frame_from_array(rgb, 'bgra')
    with pytest.raises(ImageError, match='unknown channel order'):
        frame_from_array(rgb, 'hsv')


GREY = 255.0


def _grey_levels(a, b, std):
    """Absolute difference of two normalized pixel tensors, in grey levels."""
    import torch
    return (a - b).abs() * torch.tensor(std).view(1, 3, 1, 1) * GREY


@pytest.mark.parametrize('size', [(640, 480), (1280, 720), (1920, 1080), (451, 300),
                                  (300, 800), (1080, 1920), (100, 60), (224, 224)])
@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'mono8'])
def test_fast_preprocessing_within_one_grey_level(engine, photos, size, encoding):
    w, h = size
    rgb = cv2.resize(photos['astronaut'], (w, h), interpolation=cv2.INTER_AREA)
    array = _encode(rgb, encoding)
    frame = frame_from_message(image_msg(array, encoding))
    pre = engine.preprocessor
    assert pre.fast, pre.fallback_reason
    fast = pre([frame])
    ref = pre.reference_pixel_values([frame])
    assert fast.shape == ref.shape == (1, 3, 224, 224)
    diff = _grey_levels(fast, ref, pre.std)
    assert float(diff.max()) <= 1.0 + 1e-3
    assert float(diff.mean()) < 0.01


def test_unsupported_processor_settings_fall_back_to_the_reference(engine, photos):
    import copy
    ip = copy.deepcopy(engine.processor.image_processor)
    ip.resample = 2  # bilinear
    pre = Preprocessor(ip)
    assert not pre.fast and 'bicubic' in pre.fallback_reason
    frame = frame_from_array(photos['coffee'])
    assert np.array_equal(pre([frame]).numpy(), pre.reference_pixel_values([frame]).numpy())
