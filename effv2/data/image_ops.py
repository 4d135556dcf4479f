"""The image operations of the official RandAugment / AutoAugment, on uint8 HWC numpy arrays.

Each function reproduces its namesake in google/automl ``efficientnetv2/autoaugment.py``,
TensorFlow's arithmetic included: float32 blends truncated to uint8, ``rgb_to_grayscale`` with
``convert_image_dtype`` scaling, geometric ops as projective transforms with nearest-neighbour
sampling whose empty pixels take the fill value 128. Two behaviours of that code are kept on
purpose, because the published accuracies were trained with them:

- ``contrast`` blends towards ``pixel count / 256`` (clipped to 255), not the mean intensity:
  the official code divides the histogram's sum, the number of pixels, by 256;
- ``solarize`` thresholds are uint8: a level-10 threshold of 256 wraps to 0 (every pixel is
  inverted), level 15's 384 to 128; ``posterize`` to 0 bits shifts by 7, as TensorFlow clamps
  shifts at the type's width minus one.

Tested against TensorFlow (tests/test_augment.py).
"""

from __future__ import annotations

import math

import numpy as np

from effv2.data import kernels

FILL = 128  # the official replace value of rotate / shear / translate / cutout

_GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return values.astype(np.uint8)  # truncation, like tf.cast


def _blend_kind(factor: float) -> bool | None:
    """None when blend returns one of its images unchanged; else whether the mix is convex
    (no clipping needed)."""
    if factor in (0.0, 1.0):
        return None
    return 0.0 < factor < 1.0


def blend(image1: np.ndarray, image2: np.ndarray, factor: float) -> np.ndarray:
    kind = _blend_kind(factor)
    if kind is None:
        return image1 if factor == 0.0 else image2
    first = image1.astype(np.float32)
    mixed = first + np.float32(factor) * (image2.astype(np.float32) - first)
    return _to_uint8(mixed if kind else np.clip(mixed, 0.0, 255.0))


def _value_table(function) -> np.ndarray:  # noqa: ANN001
    """A per-value op as one 256-entry uint8 table per channel: the op applied to 0..255."""
    values = np.arange(256, dtype=np.uint8)
    return np.ascontiguousarray(np.broadcast_to(function(values), (3, 256)), dtype=np.uint8)


def _by_value(image: np.ndarray, function) -> np.ndarray:  # noqa: ANN001
    """An op whose output pixel depends only on the input value: the same numpy arithmetic on
    the 256 possible values, then a table lookup (the same bits, far fewer operations)."""
    return kernels.lookup(np.ascontiguousarray(image), _value_table(function))


def _grayscale(image: np.ndarray) -> np.ndarray:
    """tf.image.rgb_to_grayscale of a uint8 image: [H, W] uint8."""
    scaled = image.astype(np.float32) * np.float32(1.0 / 255.0)
    gray = scaled[..., 0] * _GRAY_WEIGHTS[0] + scaled[..., 1] * _GRAY_WEIGHTS[1] + scaled[..., 2] * _GRAY_WEIGHTS[2]
    return _to_uint8(gray * np.float32(255.5))


def color(image: np.ndarray, factor: float) -> np.ndarray:
    kind = _blend_kind(factor)
    if kind is None:
        return np.repeat(_grayscale(image)[..., None], 3, axis=2) if factor == 0.0 else image
    return kernels.color(np.ascontiguousarray(image), np.float32(factor), kind)


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    pixels = image.shape[0] * image.shape[1]
    level = min(np.float32(pixels) / np.float32(256.0), np.float32(255.0))
    return _by_value(image, lambda values: blend(np.full(values.shape, int(level), np.uint8), values, factor))


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
    return _by_value(image, lambda values: blend(np.zeros_like(values), values, factor))


def posterize(image: np.ndarray, bits: int) -> np.ndarray:
    shift = min(8 - bits, 7)
    return _by_value(image, lambda values: (values >> shift) << shift)


def solarize(image: np.ndarray, threshold: int) -> np.ndarray:
    threshold %= 256  # a uint8 comparison constant
    return _by_value(image, lambda values: np.where(values < threshold, values, 255 - values))


def solarize_add(image: np.ndarray, addition: int, threshold: int = 128) -> np.ndarray:
    def add(values: np.ndarray) -> np.ndarray:
        added = np.clip(values.astype(np.int64) + addition, 0, 255).astype(np.uint8)
        return np.where(values < threshold, added, values)

    return _by_value(image, add)


def _autocontrast_table(low: np.float32, high: np.float32) -> np.ndarray:
    values = np.arange(256, dtype=np.uint8)
    if not high > low:
        return values
    scale = np.float32(255.0) / (high - low)
    return _to_uint8(np.clip(values.astype(np.float32) * scale + (-low * scale), 0.0, 255.0))


def autocontrast(image: np.ndarray) -> np.ndarray:
    image = np.ascontiguousarray(image)
    low, high = (values.astype(np.float32) for values in kernels.channel_ranges(image))
    tables = np.stack([_autocontrast_table(low[c], high[c]) for c in range(3)])
    return kernels.lookup(image, tables)


def sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    """The 3x3 smoothing (``kernels.sharpness``: exact, whatever the CPU) blended with the image."""
    if factor == 1.0:
        return image
    # factor 0 gives the smoothed image itself: d + 0 (v - d) = d, a mix without clipping
    return kernels.sharpness(np.ascontiguousarray(image), np.float32(factor), 0.0 <= factor < 1.0)


def _equalize_table(histogram: np.ndarray) -> np.ndarray:
    nonzero = histogram[histogram != 0]
    step = (nonzero.sum() - nonzero[-1]) // 255
    if step == 0:
        return np.arange(256, dtype=np.uint8)
    lut = (np.cumsum(histogram) + step // 2) // step
    return np.clip(np.concatenate([[0], lut[:-1]]), 0, 255).astype(np.uint8)


def equalize(image: np.ndarray) -> np.ndarray:
    image = np.ascontiguousarray(image)
    tables = np.stack([_equalize_table(histogram) for histogram in kernels.channel_histograms(image)])
    return kernels.lookup(image, tables)


def invert(image: np.ndarray) -> np.ndarray:
    return 255 - image


def projective(image: np.ndarray, transform: list[float], fill: int = FILL) -> np.ndarray:
    """TensorFlow's ImageProjectiveTransform with nearest sampling: output pixel (x, y) reads the
    input at ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1, in float32,
    rounded half away from zero; pixels read from outside the image take ``fill`` (the official
    wrap / unwrap)."""
    coefficients = (np.float32(t) for t in transform)
    return kernels.projective_nearest(np.ascontiguousarray(image), *coefficients, np.uint8(fill))


def rotate(image: np.ndarray, degrees: float, fill: int = FILL) -> np.ndarray:
    """Counter-clockwise by ``degrees`` about the centre (tfa.image.rotate)."""
    radians = np.float32(degrees) * np.float32(math.pi / 180.0)
    cos, sin = np.cos(radians), np.sin(radians)
    height, width = (np.float32(size - 1) for size in image.shape[:2])
    x_offset = (width - (cos * width - sin * height)) / np.float32(2.0)
    y_offset = (height - (sin * width + cos * height)) / np.float32(2.0)
    return projective(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0], fill)


def translate_x(image: np.ndarray, pixels: float, fill: int = FILL) -> np.ndarray:
    return projective(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0], fill)


def translate_y(image: np.ndarray, pixels: float, fill: int = FILL) -> np.ndarray:
    return projective(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0], fill)


def shear_x(image: np.ndarray, level: float, fill: int = FILL) -> np.ndarray:
    return projective(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], fill)


def shear_y(image: np.ndarray, level: float, fill: int = FILL) -> np.ndarray:
    return projective(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0], fill)


def cutout(image: np.ndarray, pad_size: int, center: tuple[int, int], fill: np.ndarray | int = FILL) -> np.ndarray:
    """Fill the (2 pad_size)-sided square around ``center`` (clipped at the borders) with
    ``fill``: a value, or an array of the image's shape to copy from."""
    height, width = image.shape[:2]
    cy, cx = center
    top, bottom = max(0, cy - pad_size), height - max(0, height - cy - pad_size)
    left, right = max(0, cx - pad_size), width - max(0, width - cx - pad_size)
    result = image.copy()
    if isinstance(fill, np.ndarray):
        result[top:bottom, left:right] = fill[top:bottom, left:right]
    else:
        result[top:bottom, left:right] = fill
    return result
