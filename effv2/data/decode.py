"""Encoded image bytes -> uint8 RGB pixels.

JPEG goes through simplejpeg (libjpeg-turbo, decoding straight into a numpy array without the
GIL): the same pixels as Pillow's libjpeg-turbo decode (tested), in ~0.6x its time. Other formats,
and CMYK / YCCK JPEGs (which libjpeg would convert unlike Pillow), go through Pillow.

Training reads the image size from the header first: the crop box depends only on the size and
the image's key, so with ``data.decode=fast`` a JPEG whose crop is at least twice the target
size is decoded at 1/2, 1/4 or 1/8 scale in the DCT (libjpeg's scaled IDCT), never at full size.
That changes pixels (a DCT-domain downscale, not the official bilinear resize of the full
decode), so it is opt-in.

Bytes that are no image, or a JPEG / PNG cut short (no end-of-image marker in its last 64 bytes:
libjpeg would fill the missing rows with grey and carry on), raise :class:`BadImage`.
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
_END_MARKERS = {b"\xff\xd8": (b"\xff\xd9", "JPEG"), b"\x89P": (b"IEND\xae\x42\x60\x82", "PNG")}


class BadImage(ValueError):
    """Bytes this pipeline cannot decode into an image; the message says why."""


def _check_whole(data: bytes | np.ndarray) -> None:
    """A JPEG or PNG must end with its end-of-image marker (a truncated download lacks it)."""
    marker = _END_MARKERS.get(bytes(data[:2]))
    if marker is not None and marker[0] not in bytes(data[-64:]):
        raise BadImage(f"truncated {marker[1]} (no end-of-image marker)")


def _as_bytes(encoded: bytes | np.ndarray) -> bytes | np.ndarray:
    if isinstance(encoded, bytes):
        return encoded
    if encoded.dtype.kind == "S":  # a MindRecord bytes field arrives as one fixed-width string
        return encoded.tobytes()
    return np.ascontiguousarray(encoded, np.uint8)


def _is_jpeg(data: bytes | np.ndarray) -> bool:
    return bytes(data[:2]) == _JPEG_MAGIC


def _unreadable(exc: Exception) -> BadImage:
    return BadImage(f"not a readable image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")


def _pillow(data: bytes | np.ndarray) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.asarray(image)
    except Exception as exc:  # Pillow raises many types for broken files
        raise _unreadable(exc) from None


def decode(encoded: bytes | np.ndarray) -> np.ndarray:
    """Encoded image bytes -> uint8 RGB HWC (grayscale and palette images are converted)."""
    data = _as_bytes(encoded)
    _check_whole(data)
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
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception as exc:  # Pillow raises many types for broken files
        raise _unreadable(exc) from None
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
    _check_whole(data)
    if factor > 1 and _simple_jpeg(data):
        scaled = -(-height // factor), -(-width // factor)
        try:
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=scaled[0], min_width=scaled[1])
        except ValueError:
            pixels = None
        if pixels is not None and pixels.shape[:2] == scaled:
            return pixels, factor
    return decode(data), 1
