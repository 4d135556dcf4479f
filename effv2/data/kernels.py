"""Compiled loops for the per-pixel work of the training and evaluation transforms.

numpy spends most of an image's time here on temporaries and fancy-index gathers (a 300 px
bilinear resize took 4.2 ms, a projective RandAugment op 2.3 ms on one Xeon core). numba
compiles each loop once per machine (cached on disk) and runs it without the GIL, so thread
workers scale with cores. Each loop performs the float32 arithmetic of the numpy / TensorFlow
expression it replaces operation by operation, in the same order: numba adds no fused
multiply-add and no reassociation by default, so the results are the same bits.
"""

from __future__ import annotations

import numba
import numpy as np

_compiled = numba.njit(cache=True, nogil=True)


@_compiled
def bilinear_taps(in_size, out_size, scale):  # noqa: ANN001, ANN201
    """tf.image.resize's bilinear taps in float32: position (i + 0.5) * scale - 0.5, the floor
    and ceiling clamped to the image, and the fraction above the floor."""
    lower, upper = np.empty(out_size, np.int64), np.empty(out_size, np.int64)
    lerp = np.empty(out_size, np.float32)
    half = np.float32(0.5)
    for i in range(out_size):
        position = (np.float32(i) + half) * scale - half
        floor = np.floor(position)
        lower[i] = int(max(floor, np.float32(0.0)))
        upper[i] = int(min(np.ceil(position), np.float32(in_size - 1)))
        lerp[i] = position - floor
    return lower, upper, lerp


@_compiled
def resize_bilinear(image, y_lower, y_upper, y_lerp, x_lower, x_upper, x_lerp, out):  # noqa: ANN001, ANN201
    """TensorFlow's bilinear resize of a contiguous image from precomputed taps (indices into
    ``image``) into ``out`` (float32, or uint8 for the truncating cast RandAugment's input gets: a
    bilinear mix of values in [0, 255] stays in it, in float32 too, so no clipping is needed).
    Each input row that an output row reads is interpolated along x once, over the row's flat
    values (two output rows share it when enlarging), then the two rows along y."""
    height, width, channels = y_lower.shape[0], x_lower.shape[0], image.shape[2]
    span = width * channels
    left, right = np.empty(span, np.int64), np.empty(span, np.int64)
    lerp = np.empty(span, np.float32)
    for x in range(width):
        for c in range(channels):
            left[x * channels + c] = x_lower[x] * channels + c
            right[x * channels + c] = x_upper[x] * channels + c
            lerp[x * channels + c] = x_lerp[x]
    first = y_lower.min()  # only the rows the taps read (the crop's), not the whole image's
    along_x = np.empty((y_upper.max() - first + 1, span), np.float32)
    done = np.zeros(along_x.shape[0], np.bool_)
    rows = image.reshape(image.shape[0], image.shape[1] * channels)
    target_rows = out.reshape(height, span)
    for y in range(height):
        for row in (y_lower[y], y_upper[y]):
            if done[row - first]:
                continue
            done[row - first] = True
            source, target = rows[row], along_x[row - first]
            for j in range(span):
                value = np.float32(source[left[j]])
                target[j] = value + (np.float32(source[right[j]]) - value) * lerp[j]
        top, bottom = along_x[y_lower[y] - first], along_x[y_upper[y] - first]
        row_lerp, target = y_lerp[y], target_rows[y]
        for j in range(span):
            target[j] = top[j] + (bottom[j] - top[j]) * row_lerp
    return out


@_compiled
def resize_bicubic(image, y_index, y_weight, x_index, x_weight):  # noqa: ANN001, ANN201
    """TF1's legacy bicubic resize from precomputed 4-tap indices and weights: along y first,
    then x, each sum taken left to right."""
    height, width, in_width, channels = y_index.shape[0], x_index.shape[0], image.shape[1], image.shape[2]
    rows = np.empty((height, in_width, channels), np.float32)
    for y in range(height):
        for x in range(in_width):
            for c in range(channels):
                total = np.float32(image[y_index[y, 0], x, c]) * y_weight[y, 0]
                for k in range(1, 4):
                    total = total + np.float32(image[y_index[y, k], x, c]) * y_weight[y, k]
                rows[y, x, c] = total
    out = np.empty((height, width, channels), np.float32)
    for y in range(height):
        for x in range(width):
            for c in range(channels):
                total = rows[y, x_index[x, 0], c] * x_weight[x, 0]
                for k in range(1, 4):
                    total = total + rows[y, x_index[x, k], c] * x_weight[x, k]
                out[y, x, c] = total
    return out


@_compiled
def projective_nearest(image, a0, a1, a2, b0, b1, b2, c0, c1, fill):  # noqa: ANN001, ANN201
    """Nearest-neighbour projective transform (float32 coefficients), coordinates rounded half
    away from zero; pixels read from outside the image take ``fill``. An affine transform
    (c0 = c1 = 0, every RandAugment op) has projection 0 x + 0 y + 1 = 1 exactly: its divisions
    by 1 are skipped, which changes no bit. Per row, the source pixels are found first (a loop
    without stores that branch, which the compiler vectorises), then copied."""
    height, width, channels = image.shape
    out = np.empty_like(image)
    one, half, zero = np.float32(1.0), np.float32(0.5), np.float32(0.0)
    affine = c0 == 0 and c1 == 0
    pixels = image.reshape(height * width, channels)
    source = np.empty(width, np.int64)
    for y in range(height):
        out_y = np.float32(y)
        for x in range(width):
            out_x = np.float32(x)
            in_x = a0 * out_x + a1 * out_y + a2
            in_y = b0 * out_x + b1 * out_y + b2
            valid = True
            if not affine:
                projection = c0 * out_x + c1 * out_y + one
                valid = projection != 0
                in_x = in_x / projection if valid else zero
                in_y = in_y / projection if valid else zero
            rounded_x = np.floor(abs(in_x) + half)
            rounded_y = np.floor(abs(in_y) + half)
            rounded_x = -rounded_x if in_x < 0 else rounded_x
            rounded_y = -rounded_y if in_y < 0 else rounded_y
            inside = valid and 0 <= rounded_x < width and 0 <= rounded_y < height
            source[x] = np.int64(rounded_y) * width + np.int64(rounded_x) if inside else -1
        for x in range(width):
            if source[x] >= 0:
                for c in range(channels):
                    out[y, x, c] = pixels[source[x], c]
            else:
                for c in range(channels):
                    out[y, x, c] = fill
    return out


@_compiled
def _blend_value(degenerate, pixel, factor, convex):  # noqa: ANN001, ANN201
    first = np.float32(degenerate)
    mixed = first + factor * (np.float32(pixel) - first)
    if not convex:
        mixed = min(max(mixed, np.float32(0.0)), np.float32(255.0))
    return np.uint8(mixed)  # truncation, like tf.cast


@_compiled
def sharpness(image, factor, convex):  # noqa: ANN001, ANN201
    """blend(smoothed, image, factor) (``convex``: 0 < factor < 1, no clipping): the interior smoothed by the kernel
    [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 and truncated, the one-pixel border kept.

    The smoothed value is the exact (neighbours + 5 centre) // 13. TensorFlow sums float32
    products, whose last bits depend on the CPU's vector width; float32(1/13) and float32(5/13)
    both lie above the exact fractions by less than 7e-9, so the exact sum of TensorFlow's terms
    never drops below an integer it reaches and exceeds S / 13 by under 1e-5: truncating it
    gives S // 13 for every input (tests/test_augment.py checks it against a float64 reference).
    """
    height, width, channels = image.shape
    out = image.copy()
    for y in range(1, height - 1):
        for x in range(1, width - 1):
            for c in range(channels):
                total = np.int32(4) * np.int32(image[y, x, c])
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        total += np.int32(image[y + dy, x + dx, c])
                out[y, x, c] = _blend_value(total // 13, image[y, x, c], factor, convex)
    return out


@_compiled
def color(image, factor, convex):  # noqa: ANN001, ANN201
    """blend(rgb_to_grayscale(image) as RGB, image, factor) (``convex``: 0 < factor < 1), in
    TensorFlow's float32 steps: scale by 1/255, weighted sum left to right, times 255.5, truncate."""
    height, width, _ = image.shape
    out = np.empty_like(image)
    scale, back = np.float32(1.0 / 255.0), np.float32(255.5)
    red, green, blue = np.float32(0.2989), np.float32(0.5870), np.float32(0.1140)
    for y in range(height):
        for x in range(width):
            gray = (
                np.float32(image[y, x, 0]) * scale * red
                + np.float32(image[y, x, 1]) * scale * green
                + np.float32(image[y, x, 2]) * scale * blue
            )
            level = np.uint8(gray * back)
            for c in range(3):
                out[y, x, c] = _blend_value(level, image[y, x, c], factor, convex)
    return out


@_compiled
def lookup(image, tables):  # noqa: ANN001, ANN201
    """out[..., c] = tables[c][image[..., c]]: one 256-entry uint8 table per channel (a
    contiguous image; one channel at a time, so each pass reads one table)."""
    height, width, channels = image.shape
    out = np.empty_like(image)
    source, target = image.reshape(height * width, channels), out.reshape(height * width, channels)
    for c in range(channels):
        table = tables[c]
        for i in range(height * width):
            target[i, c] = table[source[i, c]]
    return out


@_compiled
def truncate_to_uint8(image):  # noqa: ANN001, ANN201
    """tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8) of a float32 HWC image (any strides)."""
    height, width, channels = image.shape
    out = np.empty((height, width, channels), np.uint8)
    low, high = np.float32(0.0), np.float32(255.0)
    for y in range(height):
        for x in range(width):
            for c in range(channels):
                out[y, x, c] = np.uint8(min(max(image[y, x, c], low), high))
    return out


@_compiled
def normalise_chw(image, mean, std):  # noqa: ANN001, ANN201
    """(image - mean) / std per channel, float32, HWC in, contiguous CHW out."""
    height, width, channels = image.shape
    out = np.empty((channels, height, width), np.float32)
    for y in range(height):
        for x in range(width):
            for c in range(channels):
                out[c, y, x] = (np.float32(image[y, x, c]) - mean[c]) / std[c]
    return out


@_compiled
def channel_ranges(image):  # noqa: ANN001, ANN201
    """(minimum, maximum) of each channel, as two int64 arrays."""
    height, width, channels = image.shape
    low = np.full(channels, 255, np.int64)
    high = np.zeros(channels, np.int64)
    for y in range(height):
        for x in range(width):
            for c in range(channels):
                value = np.int64(image[y, x, c])
                low[c] = min(low[c], value)
                high[c] = max(high[c], value)
    return low, high


@_compiled
def channel_histograms(image):  # noqa: ANN001, ANN201
    """[channels, 256] pixel counts of each value."""
    height, width, channels = image.shape
    counts = np.zeros((channels, 256), np.int64)
    for y in range(height):
        for x in range(width):
            for c in range(channels):
                counts[c, image[y, x, c]] += 1
    return counts


@_compiled
def lookup_chw(image, tables):  # noqa: ANN001, ANN201
    """out[c] = tables[c][image[..., c]] as contiguous float32 CHW: a contiguous uint8 image
    normalised through one 256-entry table per channel."""
    height, width, channels = image.shape
    out = np.empty((channels, height * width), np.float32)
    source = image.reshape(height * width, channels)
    for c in range(channels):
        table, plane = tables[c], out[c]
        for i in range(height * width):
            plane[i] = table[source[i, c]]
    return out.reshape(channels, height, width)
