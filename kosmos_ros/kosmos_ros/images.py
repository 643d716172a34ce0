# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Image messages and arrays to :class:`Frame`, without rclpy.

Messages are duck-typed: ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` from rclpy
and from ``rosbags`` go through the same functions. 8-bit RGB, BGR, RGBA, BGRA and mono images
become zero-copy views of the message buffer (rows padded by ``step`` included); other
encodings (16-bit, Bayer, YUV 4:2:2) are converted to RGB by ``rosbags-image``; JPEG and PNG
payloads are decoded by OpenCV only once the size their header declares, read as the decoder
reads it, is within the pixel limit (a 1 KB payload can declare a 6 GB image); a payload whose
size cannot be established is refused undecoded. Colour order is resolved after resizing.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from kosmos_ros.errors import ImageError
from kosmos_ros.threads import opencv

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
# Markers libjpeg reads before the scan: with a length (DHT, DAC, DQT, DNL, DRI, APPn, COM) and
# without one (TEM, RST0-7); any other marker there (SOI, EOI, DHP, EXP, JPG, JPGn) stops it.
_JPEG_SEGMENTS = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# Segments libjpeg skips by their length (APPn, COM, DNL); it reads the others' contents.
_JPEG_SKIPPED = frozenset({0xDC, 0xFE, *range(0xE0, 0xF0)})
_JPEG_SOS = 0xDA
# Markers read before the scan at most: encoders write about 10 to 30, a file with ICC and XMP
# chunks under a hundred. The bound keeps the Python walk of a hostile header short.
_JPEG_MAX_MARKERS = 1024


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


def _trailing_zeros_start(data: np.ndarray) -> int:
    """Return the index where the run of zero bytes ending ``data`` begins (its size if none).

    Searches backwards in windows that double, so the cost follows the padding, not the payload.
    """
    end, window = int(data.size), 64
    while end > 0:
        start = max(0, end - window)
        nonzero = np.flatnonzero(data[start:end])
        if nonzero.size:
            return start + int(nonzero[-1]) + 1
        end, window = start, window * 2
    return 0


def _next_jpeg_marker(data: np.ndarray, pos: int) -> tuple[int, int] | None:
    """Return (marker, index after it) of the first marker at or after ``pos``; None if none.

    This is libjpeg's ``next_marker`` (jdmarker.c): bytes other than 0xFF are skipped as
    extraneous, repeated 0xFF are fill, and 0xFF 0x00 is stuffed data, not a marker. So a marker
    is a 0xFF followed by a byte that is neither 0x00 nor 0xFF, and the first such pair at or
    after ``pos`` is the one the decoder reads. Windows double so that skipped bytes cost numpy
    time, not Python steps.
    """
    size = int(data.size)
    if pos + 1 < size and data[pos] == 0xFF and data[pos + 1] not in (0x00, 0xFF):
        return int(data[pos + 1]), pos + 2  # the common case: the marker is right here
    window = 256
    while pos + 1 < size:
        end = min(size, pos + window)
        code = data[pos + 1:end]
        found = np.flatnonzero((data[pos:end - 1] == 0xFF) & (code != 0x00) & (code != 0xFF))
        if found.size:
            at = pos + int(found[0])
            return int(data[at + 1]), at + 2
        pos, window = end - 1, window * 2
    return None


def _jpeg_size(data: np.ndarray) -> tuple[int, int]:
    """Return (width, height) from the frame header libjpeg reads; raise ImageError if unsure.

    Walks the markers from SOI to the first scan (SOS) as libjpeg's ``read_markers`` does, and
    refuses every stream on which libjpeg itself stops with an error before the scan (a second
    SOI or frame header, a scan before the frame header, a reserved marker, a bad length), so
    that the size returned is the one the decoder allocates.
    """
    def refuse(reason: str) -> ImageError:
        return ImageError(f'cannot establish the size of the JPEG: {reason}')

    size, pos, found = int(data.size), 2, None
    for _ in range(_JPEG_MAX_MARKERS):
        marker_at = _next_jpeg_marker(data, pos)
        if marker_at is None:
            raise refuse('no frame header found before the scan' if found is None
                         else 'no scan after the frame header')
        marker, pos = marker_at
        if marker in _JPEG_STANDALONE:
            continue
        if marker == _JPEG_SOS:
            if found is None:
                raise refuse('no frame header found before the scan')
            return found
        if marker == 0xD8:
            raise refuse(f'a second start-of-image marker at byte {pos - 2}')
        if marker == 0xD9:
            raise refuse(f'the end-of-image marker at byte {pos - 2} comes before any scan')
        if marker not in _JPEG_SOF and marker not in _JPEG_SEGMENTS:
            raise refuse(f'marker 0x{marker:02X} before the scan, which libjpeg rejects')
        if pos + 2 > size:
            raise refuse(f'marker 0x{marker:02X} at byte {pos - 2} has no length')
        length = int(data[pos]) << 8 | int(data[pos + 1])
        if length < 2 and marker in _JPEG_SKIPPED:
            pos += 2  # libjpeg skips nothing more and looks for the next marker from here
            continue
        if length < 2 or pos + length > size:
            raise refuse(f'marker 0x{marker:02X} at byte {pos - 2} declares {length} bytes, '
                         f'{size - pos} are left')
        if marker in _JPEG_SOF:
            if found is not None:
                raise refuse(f'a second frame header (marker 0x{marker:02X}) at byte {pos - 2}')
            if length < 8:
                raise refuse(f'frame header of {length} bytes is too short')
            height = int(data[pos + 3]) << 8 | int(data[pos + 4])
            width = int(data[pos + 5]) << 8 | int(data[pos + 6])
            if height == 0:
                raise refuse(f'the frame header declares width {width} and height 0 '
                             '(height defined later by a DNL marker)')
            found = width, height
        pos += length
    raise refuse(f'more than {_JPEG_MAX_MARKERS} markers before the scan')


def _png_size(data: np.ndarray) -> tuple[int, int]:
    """Return (width, height) from the IHDR chunk, which decoders require first."""
    head = data[8:24].tobytes()
    length, kind = int.from_bytes(head[0:4], 'big'), head[4:8]
    if len(head) < 16 or kind != b'IHDR' or length != 13:
        raise ImageError(f'cannot establish the size of the PNG: its first chunk is {kind!r} '
                         f'of {length} bytes, not IHDR of 13 bytes')
    return int.from_bytes(head[8:12], 'big'), int.from_bytes(head[12:16], 'big')


def declared_size(data: np.ndarray) -> tuple[int, int]:
    """Return (width, height) as a PNG or JPEG header declares it to its decoder.

    Raises ImageError when the header does not establish the size the decoder would use.
    """
    if data[:8].tobytes() == _PNG_SIGNATURE:
        return _png_size(data)
    if data[:2].tobytes() == _JPEG_SOI:
        return _jpeg_size(data)
    raise ImageError('cannot establish the size of a payload that is neither JPEG nor PNG')


def frame_from_compressed(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Frame:
    """Decode a ``sensor_msgs/CompressedImage`` holding a JPEG or PNG payload.

    Nothing is decoded before the size the header declares is known to be within
    ``max_pixels``: a payload whose size cannot be established is refused.
    """
    cv2 = opencv()

    fmt = str(msg.format).lower()
    if 'compresseddepth' in fmt:
        raise ImageError(f'compressed depth images ({msg.format!r}) are not colour images')
    data = _buffer(msg.data)
    if data.size == 0:
        raise ImageError('compressed image has no data')
    head = data[:8].tobytes()
    if head.startswith(_JPEG_SOI):
        # libjpeg decodes a truncated stream with a warning and grey rows; refuse it instead.
        # Zero padding after the end-of-image marker, however long, is accepted.
        end = _trailing_zeros_start(data)
        if data[max(0, end - 2):end].tobytes() != _JPEG_EOI:
            raise ImageError(f'truncated JPEG: no end-of-image marker in {data.size} bytes')
    elif not head.startswith(_PNG_SIGNATURE):
        raise ImageError(f'compressed image (format {msg.format!r}) is neither JPEG nor PNG')
    _check_size(*declared_size(data), max_pixels)  # before decoding allocates it
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
