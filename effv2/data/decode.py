"""Encoded image bytes -> uint8 RGB pixels.

JPEG goes through simplejpeg (libjpeg-turbo, decoding straight into a numpy array without the
GIL): the same pixels as Pillow's libjpeg-turbo decode (tested), in ~0.6x its time. Other formats,
and CMYK / YCCK JPEGs (which libjpeg would convert unlike Pillow), go through Pillow.

Training reads the image size from the header first: the crop box depends only on the size and
the image's key, so with ``data.decode=fast`` a JPEG whose crop is at least twice the target
size is decoded at 1/2, 1/4 or 1/8 scale in the DCT (libjpeg's scaled IDCT), never at full size.
That changes pixels (a DCT-domain downscale, not the official bilinear resize of the full
decode), so it is opt-in.
"""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image

_JPEG_MAGIC = b"\xff\xd8"
# colour spaces libjpeg turns into RGB as Pillow does; CMYK / YCCK (Adobe's inverted inks) go to Pillow
_RGB_JPEG_SPACES = ("YCbCr", "Gray", "RGB")
# libjpeg's scaled IDCT offers M/8 for M = 1..16; only the exact halvings keep pixel centres simple
SCALE_FACTORS = (8, 4, 2)


def _as_bytes(encoded: bytes | np.ndarray) -> bytes | np.ndarray:
    return encoded if isinstance(encoded, bytes) else np.ascontiguousarray(encoded, np.uint8)


def _is_jpeg(data: bytes | np.ndarray) -> bool:
    return bytes(data[:2]) == _JPEG_MAGIC


def _pillow(data: bytes | np.ndarray) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image)


def decode(encoded: bytes | np.ndarray) -> np.ndarray:
    """Encoded image bytes -> uint8 RGB HWC (grayscale and palette images are converted)."""
    data = _as_bytes(encoded)
    if _simple_jpeg(data):
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError:  # a file libjpeg only half reads: Pillow decides
            pass
    return _pillow(data)


def _simple_jpeg(data: bytes | np.ndarray) -> bool:
    """A JPEG in a colour space libjpeg converts to RGB exactly as Pillow does."""
    if not _is_jpeg(data):
        return False
    try:
        return simplejpeg.decode_jpeg_header(data)[2] in _RGB_JPEG_SPACES
    except ValueError:
        return False


def image_size(encoded: bytes | np.ndarray) -> tuple[int, int]:
    """(height, width) from the header alone."""
    data = _as_bytes(encoded)
    if _is_jpeg(data):
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return int(height), int(width)
        except ValueError:
            pass
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    return height, width


def downscale_factor(crop_height: int, crop_width: int, target: int) -> int:
    """The largest of 8, 4, 2 that keeps both crop sides at least ``target`` pixels; 1 when none does."""
    for factor in SCALE_FACTORS:
        if crop_height >= factor * target and crop_width >= factor * target:
            return factor
    return 1


def decode_scaled(encoded: bytes | np.ndarray, factor: int, height: int, width: int) -> tuple[np.ndarray, int]:
    """A ``height`` x ``width`` JPEG decoded at 1 / ``factor`` scale (sides rounded up, as libjpeg
    does), and the factor it was decoded at: 1 (the full decode) for other formats."""
    data = _as_bytes(encoded)
    if factor > 1 and _simple_jpeg(data):
        scaled = -(-height // factor), -(-width // factor)
        try:
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=scaled[0], min_width=scaled[1])
        except ValueError:
            pixels = None
        if pixels is not None and pixels.shape[:2] == scaled:
            return pixels, factor
    return decode(data), 1
