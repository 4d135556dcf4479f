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

FILL = 128  # the official replace value of rotate / shear / translate / cutout

_GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return values.astype(np.uint8)  # truncation, like tf.cast


def blend(image1: np.ndarray, image2: np.ndarray, factor: float) -> np.ndarray:
    if factor == 0.0:
        return image1
    if factor == 1.0:
        return image2
    first = image1.astype(np.float32)
    mixed = first + np.float32(factor) * (image2.astype(np.float32) - first)
    if 0.0 < factor < 1.0:
        return _to_uint8(mixed)
    return _to_uint8(np.clip(mixed, 0.0, 255.0))


def _grayscale(image: np.ndarray) -> np.ndarray:
    """tf.image.rgb_to_grayscale of a uint8 image: [H, W] uint8."""
    scaled = image.astype(np.float32) * np.float32(1.0 / 255.0)
    gray = scaled[..., 0] * _GRAY_WEIGHTS[0] + scaled[..., 1] * _GRAY_WEIGHTS[1] + scaled[..., 2] * _GRAY_WEIGHTS[2]
    return _to_uint8(gray * np.float32(255.5))


def color(image: np.ndarray, factor: float) -> np.ndarray:
    degenerate = np.repeat(_grayscale(image)[..., None], 3, axis=2)
    return blend(degenerate, image, factor)


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    pixels = image.shape[0] * image.shape[1]
    level = min(np.float32(pixels) / np.float32(256.0), np.float32(255.0))
    degenerate = np.full(image.shape, int(level), np.uint8)
    return blend(degenerate, image, factor)


def brightness(image: np.ndarray, factor: float) -> np.ndarray:
    return blend(np.zeros_like(image), image, factor)


def posterize(image: np.ndarray, bits: int) -> np.ndarray:
    shift = min(8 - bits, 7)
    return (image >> shift) << shift


def solarize(image: np.ndarray, threshold: int) -> np.ndarray:
    threshold %= 256  # a uint8 comparison constant
    return np.where(image < threshold, image, 255 - image)


def solarize_add(image: np.ndarray, addition: int, threshold: int = 128) -> np.ndarray:
    added = np.clip(image.astype(np.int64) + addition, 0, 255).astype(np.uint8)
    return np.where(image < threshold, added, image)


def autocontrast(image: np.ndarray) -> np.ndarray:
    channels = []
    for c in range(3):
        channel = image[..., c]
        low, high = np.float32(channel.min()), np.float32(channel.max())
        if high > low:
            scale = np.float32(255.0) / (high - low)
            scaled = channel.astype(np.float32) * scale + (-low * scale)
            channel = _to_uint8(np.clip(scaled, 0.0, 255.0))
        channels.append(channel)
    return np.stack(channels, axis=2)


def sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    values = image.astype(np.float32)
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / np.float32(13.0)
    height, width = image.shape[:2]
    smoothed = np.zeros((height - 2, width - 2, 3), np.float32)
    for dy in range(3):
        for dx in range(3):
            smoothed += values[dy : dy + height - 2, dx : dx + width - 2] * kernel[dy, dx]
    result = image.copy()
    result[1:-1, 1:-1] = _to_uint8(np.clip(smoothed, 0.0, 255.0))
    return blend(result, image, factor)


def equalize(image: np.ndarray) -> np.ndarray:
    channels = []
    for c in range(3):
        channel = image[..., c]
        histogram = np.bincount(channel.ravel(), minlength=256).astype(np.int64)
        nonzero = histogram[histogram != 0]
        step = (nonzero.sum() - nonzero[-1]) // 255
        if step == 0:
            channels.append(channel)
            continue
        lut = (np.cumsum(histogram) + step // 2) // step
        lut = np.clip(np.concatenate([[0], lut[:-1]]), 0, 255)
        channels.append(lut[channel].astype(np.uint8))
    return np.stack(channels, axis=2)


def invert(image: np.ndarray) -> np.ndarray:
    return 255 - image


def _round_half_away(values: np.ndarray) -> np.ndarray:
    return (np.sign(values) * np.floor(np.abs(values) + np.float32(0.5))).astype(np.int64)


def projective(image: np.ndarray, transform: list[float], fill: int = FILL) -> np.ndarray:
    """TensorFlow's ImageProjectiveTransform with nearest sampling: output pixel (x, y) reads the
    input at ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1; pixels read
    from outside the image take ``fill`` (the official wrap / unwrap)."""
    a0, a1, a2, b0, b1, b2, c0, c1 = (np.float32(t) for t in transform)
    height, width = image.shape[:2]
    out_y, out_x = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
    projection = c0 * out_x + c1 * out_y + np.float32(1.0)
    in_x = _round_half_away((a0 * out_x + a1 * out_y + a2) / projection)
    in_y = _round_half_away((b0 * out_x + b1 * out_y + b2) / projection)
    inside = (in_x >= 0) & (in_x < width) & (in_y >= 0) & (in_y < height) & (projection != 0)
    result = np.full_like(image, fill)
    result[inside] = image[in_y[inside], in_x[inside]]
    return result


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
