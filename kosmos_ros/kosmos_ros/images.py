# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Image messages and arrays to :class:`Frame`, without rclpy.

Messages are duck-typed: ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` from rclpy
and from ``rosbags`` go through the same functions. 8-bit RGB, BGR, RGBA, BGRA and mono images
become zero-copy views of the message buffer (rows padded by ``step`` included); other
encodings (16-bit, Bayer, YUV 4:2:2) are converted to RGB by ``rosbags-image``; JPEG and PNG
payloads are decoded by OpenCV, once the size their header declares is within the pixel limit
(a small payload can declare a huge image). Colour order is resolved after resizing.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from kosmos_ros.errors import ImageError

# Encodings read as views: name -> (channels, channel order).
DIRECT_ENCODINGS = {
    'rgb8': (3, 'rgb'), 'bgr8': (3, 'bgr'), 'rgba8': (4, 'rgba'), 'bgra8': (4, 'bgra'),
    'mono8': (1, 'mono'), '8UC1': (1, 'mono'),
}
# Encodings converted to rgb8 by rosbags-image: name -> bytes per pixel.
CONVERTED_ENCODINGS = {
    'mono16': 2, 'rgb16': 6, 'bgr16': 6, 'rgba16': 8, 'bgra16': 8,
    'bayer_rggb8': 1, 'bayer_bggr8': 1, 'bayer_gbrg8': 1, 'bayer_grbg8': 1,
    'bayer_rggb16': 2, 'bayer_bggr16': 2, 'bayer_gbrg16': 2, 'bayer_grbg16': 2,
    'yuv422': 2, 'uyvy': 2, 'yuyv': 2, 'yuv422_yuy2': 2,
}
SUPPORTED_ENCODINGS = tuple(DIRECT_ENCODINGS) + tuple(CONVERTED_ENCODINGS)
# Largest frame accepted by default (a 100-megapixel frame is refused, an 8K one is not).
DEFAULT_MAX_PIXELS = 50_000_000
_JPEG_SOI = b'\xff\xd8'
_JPEG_EOI = b'\xff\xd9'
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers (SOF0 to SOF15 but DHT, JPG and DAC), which hold the image size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class Frame:
    """An 8-bit image of shape (height, width, channels) in a known channel order.

    ``array`` may be a read-only, strided view of a message buffer: nothing copies it until
    preprocessing resizes it.
    """

    array: np.ndarray
    order: str  # 'rgb', 'bgr', 'rgba', 'bgra' or 'mono'

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    def to_rgb(self) -> np.ndarray:
        """Return a contiguous (height, width, 3) uint8 RGB copy (for drawing and references)."""
        a = self.array
        if self.order == 'mono':
            return np.ascontiguousarray(np.repeat(a[:, :, :1], 3, axis=2))
        if self.order in ('bgr', 'bgra'):
            return np.ascontiguousarray(a[:, :, 2::-1])
        return np.ascontiguousarray(a[:, :, :3])


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f'image is empty ({width}x{height})')
    if width * height > max_pixels:
        raise ImageError(f'image of {width}x{height} = {width * height} pixels exceeds the '
                         f'limit of {max_pixels} pixels')


def frame_from_array(array: np.ndarray, order: str = 'rgb',
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> Frame:
    """Wrap an (H, W, 3|4) or (H, W) uint8 array; ``order`` names its channels."""
    if not isinstance(array, np.ndarray):
        raise ImageError(f'expected a numpy array, got {type(array).__name__}')
    if array.dtype != np.uint8:
        raise ImageError(f'expected a uint8 array, got {array.dtype}')
    if array.ndim == 2:
        array, order = array[:, :, None], 'mono'
    expected = {'rgb': 3, 'bgr': 3, 'rgba': 4, 'bgra': 4, 'mono': 1}
    if order not in expected:
        raise ImageError(f'unknown channel order {order!r}; expected one of {sorted(expected)}')
    if array.ndim != 3 or array.shape[2] != expected[order]:
        raise ImageError(f'array of shape {array.shape} does not hold {order} pixels')
    _check_size(array.shape[1], array.shape[0], max_pixels)
    return Frame(array, order)


def _buffer(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def frame_from_image(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Frame:
    """Convert a ``sensor_msgs/Image`` (any message with its fields) to a Frame."""
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    encoding = str(msg.encoding)
    _check_size(width, height, max_pixels)
    if encoding in DIRECT_ENCODINGS:
        channels, order = DIRECT_ENCODINGS[encoding]
        bytes_per_pixel = channels
    elif encoding in CONVERTED_ENCODINGS:
        bytes_per_pixel, order = CONVERTED_ENCODINGS[encoding], 'rgb'
    else:
        raise ImageError(f'unsupported image encoding {encoding!r}; supported: '
                         + ', '.join(SUPPORTED_ENCODINGS))
    row = width * bytes_per_pixel
    if step < row:
        raise ImageError(f'{encoding} image {width}x{height}: step {step} is smaller than '
                         f'width * {bytes_per_pixel} bytes = {row}')
    data = _buffer(msg.data)
    if data.size != step * height:
        raise ImageError(f'{encoding} image {width}x{height}: data holds {data.size} bytes but '
                         f'step * height = {step * height}')
    rows = data.reshape(height, step)[:, :row]
    if encoding in DIRECT_ENCODINGS:
        array = rows.reshape(height, width, bytes_per_pixel)
        array.flags.writeable = False
        return Frame(array, order)
    # Other encodings: one conversion path, rosbags-image (it assumes packed rows).
    from rosbags.image import image_to_cvimage
    packed = SimpleNamespace(width=width, height=height, step=row, encoding=encoding,
                             is_bigendian=int(msg.is_bigendian),
                             data=np.ascontiguousarray(rows).reshape(-1))
    try:
        rgb = image_to_cvimage(packed, 'rgb8')
    except Exception as exc:  # rosbags-image raises several types, cv2 raises cv2.error
        raise ImageError(f'cannot convert {encoding} image to rgb8: {exc}') from None
    return Frame(np.asarray(rgb, dtype=np.uint8).reshape(height, width, 3), 'rgb')


def declared_size(data: np.ndarray) -> tuple[int, int] | None:
    """Return (width, height) as a PNG or JPEG header declares it; None if not found."""
    if data[:8].tobytes() == _PNG_SIGNATURE:
        head = data[8:24].tobytes()
        if len(head) == 16 and head[4:8] == b'IHDR':
            return int.from_bytes(head[8:12], 'big'), int.from_bytes(head[12:16], 'big')
        return None
    pos, size = 2, int(data.size)
    while pos + 4 <= size:  # JPEG: walk the marker segments up to the first frame header
        if data[pos] != 0xFF:
            return None
        marker = int(data[pos + 1])
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            return None
        if marker in _JPEG_SOF:
            if pos + 9 > size:
                return None
            height = int(data[pos + 5]) << 8 | int(data[pos + 6])
            width = int(data[pos + 7]) << 8 | int(data[pos + 8])
            return width, height
        pos += 2 + (int(data[pos + 2]) << 8 | int(data[pos + 3]))
    return None


def frame_from_compressed(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Frame:
    """Decode a ``sensor_msgs/CompressedImage`` holding a JPEG or PNG payload."""
    import cv2

    fmt = str(msg.format).lower()
    if 'compresseddepth' in fmt:
        raise ImageError(f'compressed depth images ({msg.format!r}) are not colour images')
    data = _buffer(msg.data)
    if data.size == 0:
        raise ImageError('compressed image has no data')
    head = data[:8].tobytes()
    if head.startswith(_JPEG_SOI):
        # libjpeg decodes a truncated stream with a warning and grey rows; refuse it instead.
        tail = data[-64:].tobytes().rstrip(b'\x00')
        if not tail.endswith(_JPEG_EOI):
            raise ImageError(f'truncated JPEG: no end-of-image marker in {data.size} bytes')
    elif not head.startswith(_PNG_SIGNATURE):
        raise ImageError(f'compressed image (format {msg.format!r}) is neither JPEG nor PNG')
    declared = declared_size(data)
    if declared is not None and declared[0] * declared[1] > max_pixels:
        _check_size(*declared, max_pixels)  # refused before decoding allocates it
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        bgr = cv2.imdecode(data, flags)
    except cv2.error as exc:
        raise ImageError(f'cannot decode compressed image: {exc}') from None
    if bgr is None:
        raise ImageError(f'corrupt compressed image (format {msg.format!r}, {data.size} bytes)')
    _check_size(bgr.shape[1], bgr.shape[0], max_pixels)
    return Frame(bgr, 'bgr')


def frame_from_message(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Frame:
    """Convert an Image or CompressedImage message (rclpy or rosbags) to a Frame."""
    if hasattr(msg, 'format'):
        return frame_from_compressed(msg, max_pixels)
    return frame_from_image(msg, max_pixels)
