"""Crops and resizes with the official TensorFlow semantics, on numpy HWC images.

The official recipes resize with TensorFlow and keep the float result (no rounding to uint8);
OpenCV- or PIL-based resizes round, PIL also antialiases. These functions reproduce:

- ``bilinear``: ``tf.image.resize`` (half-pixel centres, no antialiasing), google/automl
  ``preprocessing.py``;
- ``bicubic``: TF1's ``resize_bicubic`` (no half-pixel centres, Keys kernel a = -0.75 from a
  1024-entry table), google/automl ``preprocess_legacy.py`` (the EfficientNetV1-style B0-B3);
- the random crop of ``tf.image.sample_distorted_bounding_box`` (area and aspect ranges,
  attempts, a whole-image bounding box), drawn from a numpy generator.

The per-pixel loops are compiled (``effv2.data.kernels``); the taps are computed here. Tested
against TensorFlow itself (tests/test_augment.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from effv2.data import kernels

RESIZE_METHODS = ("bilinear", "bicubic")

_TABLE_SIZE = 1024


def _bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, lerp) per output pixel: half-pixel centres, float32."""
    return kernels.bilinear_taps(in_size, out_size, np.float32(in_size / out_size))


def _from_bilinear_taps(image: np.ndarray, y_taps: tuple, x_taps: tuple, mirror: bool, dtype: type) -> np.ndarray:
    """The compiled bilinear loop on taps that index the contiguous ``image`` itself; ``mirror``
    reverses the x taps (the same values in reverse column order)."""
    x_lower, x_upper, x_lerp = x_taps
    if mirror:
        x_lower, x_upper, x_lerp = x_lower[::-1].copy(), x_upper[::-1].copy(), x_lerp[::-1].copy()
    out = np.empty((len(y_taps[0]), len(x_lower), image.shape[2]), dtype)
    return kernels.resize_bilinear(np.ascontiguousarray(image), *y_taps, x_lower, x_upper, x_lerp, out)


def _resize_bilinear(
    image: np.ndarray, window: CropBox, height: int, width: int, mirror: bool, dtype: type
) -> np.ndarray:
    """``window`` of ``image`` resized; the taps index the whole image, so the crop is never copied."""
    y_lower, y_upper, y_lerp = _bilinear_taps(window.height, height)
    x_lower, x_upper, x_lerp = _bilinear_taps(window.width, width)
    y_taps = (y_lower + window.top, y_upper + window.top, y_lerp)
    x_taps = (x_lower + window.left, x_upper + window.left, x_lerp)
    return _from_bilinear_taps(image, y_taps, x_taps, mirror, dtype)


def _keys_table(a: float = -0.75) -> np.ndarray:
    x = np.arange(_TABLE_SIZE + 1, dtype=np.float32) / np.float32(_TABLE_SIZE)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far_x = x + 1
    far = ((a * far_x - 5 * a) * far_x + 8 * a) * far_x - 4 * a
    return np.stack([near, far], axis=1).astype(np.float32)


_KEYS = _keys_table()


def _bicubic_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices [out, 4] and weights [out, 4] of TF1's legacy resize_bicubic."""
    scale = np.float32(in_size / out_size)
    position = np.arange(out_size, dtype=np.float32) * scale
    base = np.floor(position).astype(np.int64)
    # lrintf: round half to even, like np.rint
    offset = np.rint((position - base) * np.float32(_TABLE_SIZE)).astype(np.int64)
    weights = np.stack(
        [_KEYS[offset, 1], _KEYS[offset, 0], _KEYS[_TABLE_SIZE - offset, 0], _KEYS[_TABLE_SIZE - offset, 1]], axis=1
    )
    indices = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)
    return indices, weights


def _resize_bicubic(image: np.ndarray, height: int, width: int, mirror: bool) -> np.ndarray:
    y_index, y_weight = _bicubic_taps(image.shape[0], height)
    x_index, x_weight = _bicubic_taps(image.shape[1], width)
    if mirror:
        x_index, x_weight = x_index[::-1].copy(), x_weight[::-1].copy()
    # along y first, then x, as TensorFlow's kernel does
    return kernels.resize_bicubic(image, y_index, y_weight, x_index, x_weight)


def _window_taps(start: int, length: int, out_size: int, factor: int, limit: int):  # noqa: ANN202
    """Bilinear taps of the window [start, start + length) of a full-size axis, read from the same
    axis decoded at 1 / ``factor`` scale (``limit`` pixels): output pixel centres mapped through
    full-size coordinates, so the window keeps its sub-pixel position."""
    centres = np.float32(start) + (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * np.float32(
        length / out_size
    )
    position = centres / np.float32(factor) - np.float32(0.5)
    floor = np.floor(position)
    lower = np.clip(floor, 0, limit - 1).astype(np.int64)
    upper = np.clip(np.ceil(position), 0, limit - 1).astype(np.int64)
    return lower, upper, (position - floor).astype(np.float32)


def resize_window(
    image: np.ndarray,
    box: CropBox,
    factor: int,
    height: int,
    width: int,
    mirror: bool = False,
    truncate: bool = False,
) -> np.ndarray:
    """Bilinear resize of ``box`` (full-size coordinates) of a uint8 image decoded at
    1 / ``factor``; ``mirror`` and ``truncate`` as in :func:`resize`."""
    y_taps = _window_taps(box.top, box.height, height, factor, image.shape[0])
    x_taps = _window_taps(box.left, box.width, width, factor, image.shape[1])
    return _from_bilinear_taps(image, y_taps, x_taps, mirror, np.uint8 if truncate else np.float32)


def resize(
    image: np.ndarray,
    height: int,
    width: int,
    method: str = "bilinear",
    mirror: bool = False,
    truncate: bool = False,
    box: CropBox | None = None,
) -> np.ndarray:
    """Resize an HWC image (its ``box``, when given) to ``height x width``; float32 out, not
    rounded. ``mirror``: the result flipped left to right (the same values, written in reverse
    column order); ``truncate``: uint8 out, truncated like tf.cast after clipping to [0, 255] (the
    input of RandAugment / AutoAugment; for bilinear the image must be uint8, whose mixes need no
    clipping)."""
    if method == "bilinear":  # in range already: the cast is done as each value is written
        window = box or CropBox(0, 0, image.shape[0], image.shape[1])
        dtype = np.uint8 if truncate else np.float32
        return _resize_bilinear(image, window, height, width, mirror, dtype)
    if method == "bicubic":  # overshoots at edges: clip first
        resized = _resize_bicubic(image if box is None else box.apply(image), height, width, mirror)
        return kernels.truncate_to_uint8(resized) if truncate else resized
    raise ValueError(f"resize method {method!r} is not one of {RESIZE_METHODS}")


@dataclass(frozen=True)
class CropBox:
    top: int
    left: int
    height: int
    width: int

    def apply(self, image: np.ndarray) -> np.ndarray:
        return image[self.top : self.top + self.height, self.left : self.left + self.width]


def _lrint(value: np.float32) -> int:
    return int(np.rint(np.float32(value)))  # lrintf: to nearest, ties to even


def _random_crop(
    rng: np.random.Generator, height: int, width: int, aspect: np.float32, min_area: np.float32, max_area: np.float32
) -> CropBox | None:
    """One attempt of TensorFlow's GenerateRandomCrop (sample_distorted_bounding_box_op.cc), in
    its float32 arithmetic."""
    crop_h = _lrint(np.sqrt(min_area / aspect))
    max_h = _lrint(np.sqrt(max_area / aspect))
    if _lrint(np.float32(max_h) * aspect) > width:
        max_h = int((width + 0.5 - 1e-7) / aspect)
        if _lrint(np.float32(max_h) * aspect) > width:
            max_h -= 1
    max_h = min(max_h, height)
    crop_h = min(crop_h, max_h)
    if crop_h < max_h:
        crop_h += int(rng.integers(max_h - crop_h + 1))
    crop_w = _lrint(np.float32(crop_h) * aspect)
    area = np.float32(crop_w * crop_h)
    if area < min_area:
        crop_h += 1
        crop_w = _lrint(np.float32(crop_h) * aspect)
        area = np.float32(crop_w * crop_h)
    if area > max_area:
        crop_h -= 1
        crop_w = _lrint(np.float32(crop_h) * aspect)
        area = np.float32(crop_w * crop_h)
    if area < min_area or area > max_area or crop_w > width or crop_h > height or crop_w <= 0 or crop_h <= 0:
        return None
    top = int(rng.integers(height - crop_h)) if crop_h < height else 0
    left = int(rng.integers(width - crop_w)) if crop_w < width else 0
    return CropBox(top, left, crop_h, crop_w)


def sample_crop(
    rng: np.random.Generator,
    height: int,
    width: int,
    area_range: tuple[float, float],
    aspect_range: tuple[float, float],
    min_object_covered: float,
    attempts: int,
) -> CropBox | None:
    """``tf.image.sample_distorted_bounding_box`` with the whole image as the bounding box: a box
    whose area fraction lies in ``area_range`` and aspect ratio (width / height) in
    ``aspect_range``, covering at least ``min_object_covered`` of the image; None when no attempt
    succeeds (TensorFlow then returns the whole image)."""
    image_area = np.float32(height * width)
    min_area = np.float32(area_range[0]) * image_area
    max_area = np.float32(area_range[1]) * image_area
    low, high = np.float32(aspect_range[0]), np.float32(aspect_range[1])
    for _ in range(attempts):
        aspect = np.float32(rng.random(dtype=np.float32)) * (high - low) + low
        box = _random_crop(rng, height, width, aspect, min_area, max_area)
        if box is not None and np.float32(box.height * box.width) / image_area >= np.float32(min_object_covered):
            return box
    return None


def center_crop_box(height: int, width: int, image_size: int, offset_rounding: int = 0) -> CropBox:
    """The square centre crop of ``image_size / (image_size + 32)`` of the shorter side (the
    official ImageNet eval crop); ``offset_rounding=1`` is the V1 legacy offset ((h - c + 1) // 2)."""
    side = int(np.float32(image_size / (image_size + 32)) * np.float32(min(height, width)))
    return CropBox((height - side + offset_rounding) // 2, (width - side + offset_rounding) // 2, side, side)
