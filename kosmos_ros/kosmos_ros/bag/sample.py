# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``make_sample_bag``: a small rosbag2 camera stream made of real photographs.

The photographs shipped with scikit-image (:mod:`kosmos_ros.testing.samples`) become the frames
of one camera: each is cropped to the stream's aspect ratio, panned slowly while it is shown (so no
two frames are identical) and resized to one common size. Every frame is written three
times, as a real driver with ``image_transport`` would: ``sensor_msgs/Image`` on
``/camera/image_raw``, ``sensor_msgs/CompressedImage`` (JPEG) on
``/camera/image_raw/compressed`` and ``sensor_msgs/CameraInfo`` on ``/camera/camera_info``,
all with the same header (stamp at the frame rate, frame_id ``camera_optical_frame``). Bag
(receive) times lag the stamps by a few milliseconds, as recorded bags do.

With ``depth`` (``32FC1`` in metres or ``16UC1`` in millimetres), a synthetic depth stream
registered to the colour frames is written too, on ``/camera/aligned_depth_to_color/image_raw``
with the same headers: a floor plane receding from 1.5 m at the bottom of the frame to 6 m at
its top, a nearer subject (an ellipse at 1.2 m) in the centre, and an invalid band (0, or NaN in
``32FC1``) along the left edge, as stereo sensors have. The photographs have no depth, so the
depth is a demonstration of the geometry, not of the pictures. ``/camera/camera_info`` is the
pinhole model of the frames (fx = fy for a 60 degree horizontal field of view, cx and cy at the
centre of the frame size), so ``ground_bag`` lifts boxes to 3D out of the box.

The bag is generated into a folder the caller names (``data/sample_bag`` by default, ignored
by git); it is never committed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
import shutil
import sys
from typing import Sequence

import numpy as np

from kosmos_ros.bag import BagError
from kosmos_ros.bag.typestore import CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, project_typestore
from kosmos_ros.cli_options import deprecated_alias
from kosmos_ros.testing.samples import load_photo, PHOTO_NAMES

DEFAULT_PATH = Path('data') / 'sample_bag'
STORAGES = ('mcap', 'sqlite3')
ENCODINGS = ('rgb8', 'bgr8')
FRAME_ID = 'camera_optical_frame'
IMAGE_TOPIC = '/camera/image_raw'
COMPRESSED_TOPIC = IMAGE_TOPIC + '/compressed'
CAMERA_INFO_TOPIC = '/camera/camera_info'
DEPTH_TOPIC = '/camera/aligned_depth_to_color/image_raw'
DEPTH_ENCODINGS = ('32FC1', '16UC1')
SUBJECT_DEPTH_M = 1.2
# First stamp: a fixed, realistic wall-clock time (2023-11-14T22:13:20Z), so bags are repeatable.
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
# Receive latency of each topic after the capture stamp (transport, then JPEG encoding).
LATENCY_NS = {IMAGE_TOPIC: 2_000_000, COMPRESSED_TOPIC: 6_000_000, CAMERA_INFO_TOPIC: 1_000_000,
              DEPTH_TOPIC: 3_000_000}


@dataclass(frozen=True)
class SampleSpec:
    """What the sample bag holds.

    Attributes:
        storage: 'mcap' or 'sqlite3'.
        rate_hz: frame rate (stamps are ``1 / rate_hz`` apart).
        duration_s: length of the stream; frames = round(duration_s * rate_hz).
        width: frame width in pixels.
        height: frame height in pixels.
        encoding: raw image encoding, 'rgb8' or 'bgr8'.
        photos: photographs shown in turn, each for an equal share of the frames.
        jpeg_quality: JPEG quality of the compressed topic (1 to 100).
        start_ns: stamp of the first frame in nanoseconds.
        depth: '' (no depth, the default), '32FC1' (metres) or '16UC1' (millimetres): also
            write the synthetic registered depth stream on ``DEPTH_TOPIC``.
    """

    storage: str = 'mcap'
    rate_hz: float = 10.0
    duration_s: float = 6.0
    width: int = 640
    height: int = 480
    encoding: str = 'rgb8'
    photos: tuple[str, ...] = PHOTO_NAMES
    jpeg_quality: int = 90
    start_ns: int = DEFAULT_START_NS
    depth: str = ''

    @property
    def frames(self) -> int:
        return max(1, int(round(self.duration_s * self.rate_hz)))

    def check(self) -> None:
        """Raise BagError naming the first invalid field."""
        if self.storage not in STORAGES:
            raise BagError(f'unknown storage {self.storage!r}; expected one of '
                           + ', '.join(STORAGES))
        if self.depth and self.depth not in DEPTH_ENCODINGS:
            raise BagError(f'unknown depth encoding {self.depth!r}; expected one of '
                           + ', '.join(DEPTH_ENCODINGS))
        if self.encoding not in ENCODINGS:
            raise BagError(f'unknown encoding {self.encoding!r}; expected one of '
                           + ', '.join(ENCODINGS))
        if not 0.1 <= self.rate_hz <= 1000.0:
            raise BagError(f'rate must be 0.1 to 1000 Hz; got {self.rate_hz}')
        if self.duration_s <= 0:
            raise BagError(f'duration must be positive; got {self.duration_s}')
        if self.width < 16 or self.height < 16:
            raise BagError(f'frames must be at least 16x16 pixels; got '
                           f'{self.width}x{self.height}')
        if not 1 <= self.jpeg_quality <= 100:
            raise BagError(f'JPEG quality must be 1 to 100; got {self.jpeg_quality}')
        unknown = [p for p in self.photos if p not in PHOTO_NAMES]
        if not self.photos or unknown:
            raise BagError(f'unknown photographs {unknown}; expected some of '
                           + ', '.join(PHOTO_NAMES))


@dataclass(frozen=True)
class SampleBag:
    """A written sample bag: where, how many frames, and the stamps of the frames (ns)."""

    path: Path
    spec: SampleSpec
    stamps_ns: tuple[int, ...]


def _crop_window(shape: tuple[int, ...], width: int, height: int, t: float) -> tuple[slice, ...]:
    """Return the largest window of the target aspect, panned across the photo as t goes 0-1."""
    rows, cols = shape[:2]
    aspect = width / height
    if cols / rows > aspect:
        w, h = int(round(rows * aspect)), rows
    else:
        w, h = cols, int(round(cols / aspect))
    x0, y0 = int(round((cols - w) * t)), int(round((rows - h) * t))
    return slice(y0, y0 + h), slice(x0, x0 + w)


def render_frames(spec: SampleSpec) -> list[tuple[str, np.ndarray]]:
    """Return (photo name, RGB frame) for every frame of the stream."""
    import cv2

    photos = {name: load_photo(name) for name in spec.photos}
    n = spec.frames
    frames = []
    for i in range(n):
        slot = min(len(spec.photos) - 1, i * len(spec.photos) // n)
        name = spec.photos[slot]
        first = -(-slot * n // len(spec.photos))
        last = -(-(slot + 1) * n // len(spec.photos)) - 1
        t = 0.5 if last <= first else 0.25 + 0.5 * (i - first) / (last - first)
        rows, cols = _crop_window(photos[name].shape, spec.width, spec.height, t)
        frames.append((name, cv2.resize(photos[name][rows, cols], (spec.width, spec.height),
                                        interpolation=cv2.INTER_AREA)))
    return frames


def render_depth(width: int, height: int) -> np.ndarray:
    """Return the synthetic depth in metres (float32, NaN where invalid); see the module doc.

    Floor: the depth grows linearly in 1 / z from 1.5 m on the bottom row to 6 m on the top
    row (a plane seen from above). Subject: an ellipse centred in the frame, half as wide and
    high as it, at ``SUBJECT_DEPTH_M``. Invalid: the leftmost 4 % of the columns.
    """
    rows = np.arange(height, dtype=np.float64)[:, None]
    cols = np.arange(width, dtype=np.float64)[None, :]
    t = rows / max(height - 1, 1)  # 0 at the top, 1 at the bottom
    inverse = (1 - t) / 6.0 + t / 1.5
    depth = np.broadcast_to(1.0 / inverse, (height, width)).astype(np.float32).copy()
    u = (cols + 0.5 - width / 2) / (width / 4)
    v = (rows + 0.5 - height / 2) / (height / 4)
    depth[(u ** 2 + v ** 2) <= 1.0] = SUBJECT_DEPTH_M
    depth[:, :max(1, int(round(width * 0.04)))] = np.nan
    return depth


def depth_msg(store, header, depth: np.ndarray, encoding: str):
    """Return a sensor_msgs/Image of ``depth`` (metres, NaN invalid) as 32FC1 or 16UC1 (mm)."""
    height, width = depth.shape
    if encoding == '16UC1':
        values = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0).astype('<u2')
    else:
        values = depth.astype('<f4')
    return store.types[IMAGE](header=header, height=height, width=width, encoding=encoding,
                              is_bigendian=0, step=width * values.itemsize,
                              data=np.ascontiguousarray(values).view(np.uint8).reshape(-1))


def camera_info_msg(store, header, width: int, height: int):
    """Return a pinhole CameraInfo: 60 degree horizontal field of view, no distortion."""
    fx = fy = width / (2.0 * np.tan(np.radians(30.0)))
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    roi = store.types['sensor_msgs/msg/RegionOfInterest'](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return store.types[CAMERA_INFO](
        header=header, height=height, width=width, distortion_model='plumb_bob',
        d=np.zeros(5, dtype=np.float64),
        k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], dtype=np.float64),
        r=np.eye(3, dtype=np.float64).reshape(-1),
        p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], dtype=np.float64),
        binning_x=0, binning_y=0, roi=roi)


def make_sample_bag(path: str | Path = DEFAULT_PATH, spec: SampleSpec | None = None,
                    overwrite: bool = False) -> SampleBag:
    """Write the sample camera stream to the rosbag2 folder ``path``; return what it holds.

    Raises BagError when ``spec`` is invalid or ``path`` exists (unless ``overwrite``).
    """
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer

    spec = spec or SampleSpec()
    spec.check()
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise BagError(f'{path} exists already; remove it or pass overwrite')
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    store = project_typestore()
    types = store.types
    plugin = StoragePlugin.MCAP if spec.storage == 'mcap' else StoragePlugin.SQLITE3
    period_ns = int(round(1e9 / spec.rate_hz))
    stamps = []
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        writer.set_custom_data('kosmos_ros.sample', 'photographs from scikit-image: '
                               + ', '.join(spec.photos))
        raw = writer.add_connection(IMAGE_TOPIC, IMAGE, typestore=store)
        jpeg = writer.add_connection(COMPRESSED_TOPIC, COMPRESSED_IMAGE, typestore=store)
        info = writer.add_connection(CAMERA_INFO_TOPIC, CAMERA_INFO, typestore=store)
        depth_conn, depth = None, None
        if spec.depth:
            depth_conn = writer.add_connection(DEPTH_TOPIC, IMAGE, typestore=store)
            depth = render_depth(spec.width, spec.height)
        for i, (_, rgb) in enumerate(render_frames(spec)):
            stamp = spec.start_ns + i * period_ns
            stamps.append(stamp)
            header = types['std_msgs/msg/Header'](
                stamp=types['builtin_interfaces/msg/Time'](sec=stamp // 1_000_000_000,
                                                           nanosec=stamp % 1_000_000_000),
                frame_id=FRAME_ID)
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            pixels = rgb if spec.encoding == 'rgb8' else bgr
            image = types[IMAGE](header=header, height=spec.height, width=spec.width,
                                 encoding=spec.encoding, is_bigendian=0, step=spec.width * 3,
                                 data=np.ascontiguousarray(pixels).reshape(-1))
            ok, payload = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality])
            if not ok:
                raise BagError(f'OpenCV could not encode frame {i} as JPEG')
            compressed = types[COMPRESSED_IMAGE](header=header,
                                                 format='rgb8; jpeg compressed bgr8',
                                                 data=payload.reshape(-1))
            cam_info = camera_info_msg(store, header, spec.width, spec.height)
            writer.write(info, stamp + LATENCY_NS[CAMERA_INFO_TOPIC],
                         store.serialize_cdr(cam_info, CAMERA_INFO))
            writer.write(raw, stamp + LATENCY_NS[IMAGE_TOPIC], store.serialize_cdr(image, IMAGE))
            if depth_conn is not None:
                writer.write(depth_conn, stamp + LATENCY_NS[DEPTH_TOPIC], store.serialize_cdr(
                    depth_msg(store, header, depth, spec.depth), IMAGE))
            writer.write(jpeg, stamp + LATENCY_NS[COMPRESSED_TOPIC],
                         store.serialize_cdr(compressed, COMPRESSED_IMAGE))
    return SampleBag(path, spec, tuple(stamps))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='make_sample_bag',
        description='Write a small rosbag2 camera stream (Image, CompressedImage, CameraInfo '
                    'on /camera/...) made of the photographs shipped with scikit-image, '
                    'optionally with a synthetic registered depth stream (--depth).')
    parser.add_argument('path', nargs='?', default=str(DEFAULT_PATH),
                        help=f'bag folder to create (default: {DEFAULT_PATH})')
    parser.add_argument('--storage', default='mcap', help='mcap (default) or sqlite3')
    parser.add_argument('--fps', type=float, default=10.0,
                        help='frames per second of the stream (10)')
    deprecated_alias(parser, '--rate', replacement='--fps', type=float)
    parser.add_argument('--duration', type=float, default=6.0, help='seconds of stream (6)')
    parser.add_argument('--width', type=int, default=640, help='frame width (640)')
    parser.add_argument('--height', type=int, default=480, help='frame height (480)')
    parser.add_argument('--encoding', default='rgb8', help='raw encoding: rgb8 or bgr8')
    parser.add_argument('--photos', default=','.join(PHOTO_NAMES),
                        help='comma-separated photographs, shown in turn (default: all)')
    parser.add_argument('--jpeg-quality', type=int, default=90)
    parser.add_argument('--depth', nargs='?', const='32FC1', default='',
                        choices=DEPTH_ENCODINGS,
                        help=f'also write a synthetic registered depth stream on {DEPTH_TOPIC}: '
                             '32FC1 (metres, the default of --depth) or 16UC1 (millimetres)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing bag')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    spec = SampleSpec(storage=args.storage, rate_hz=args.fps, duration_s=args.duration,
                      width=args.width, height=args.height, encoding=args.encoding,
                      photos=tuple(p.strip() for p in args.photos.split(',') if p.strip()),
                      jpeg_quality=args.jpeg_quality, depth=args.depth or '')
    try:
        bag = make_sample_bag(args.path, spec, overwrite=args.overwrite)
    except BagError as exc:
        print(f'make_sample_bag: error: {exc}', file=sys.stderr)
        return 2
    print(f'wrote {bag.path} ({spec.storage}): {spec.frames} frames of '
          f'{spec.width}x{spec.height} at {spec.rate_hz:g} Hz on {IMAGE_TOPIC} ({spec.encoding}),'
          f' {COMPRESSED_TOPIC} (JPEG) and {CAMERA_INFO_TOPIC}'
          + (f', depth ({spec.depth}) on {DEPTH_TOPIC}' if spec.depth else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
