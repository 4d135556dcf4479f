"""The official augmentation and preprocessing, each op against a TensorFlow computation of the
same thing written here from google/automl's semantics (autoaugment.py, preprocessing.py,
preprocess_legacy.py): RandAugment / AutoAugment ops at several levels, both resizes, the crop
sampler's distribution, the eval crop, and the per-image keyed randomness."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from effv2.data import geometry  # noqa: E402
from effv2.data.augment import AUTOAUGMENT_CONSTANTS, RANDAUGMENT_OPS, apply_op  # noqa: E402


def _images() -> list[np.ndarray]:
    """A noise image (every value, odd sizes) and a smooth one with edges (real structure)."""
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    y, x = np.mgrid[0:48, 0:40]
    smooth = np.stack([(x * 6) % 256, (y * 5 + x) % 256, np.where((x - 20) ** 2 + (y - 24) ** 2 < 150, 230, 20)], 2)
    return [noise, smooth.astype(np.uint8)]


IMAGES = _images()


# ---- the TensorFlow reference, written from the official code's semantics ------------------------
def _tf_blend(image1, image2, factor: float):
    if factor == 0.0:
        return tf.convert_to_tensor(image1)
    if factor == 1.0:
        return tf.convert_to_tensor(image2)
    first = tf.cast(image1, tf.float32)
    mixed = first + factor * (tf.cast(image2, tf.float32) - first)
    if 0.0 < factor < 1.0:
        return tf.cast(mixed, tf.uint8)
    return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def _tf_fill_outside(image, transform: list[float]):
    """The official wrap / unwrap around a nearest-neighbour projective transform: pixels read
    from outside the image become 128."""
    wrapped = tf.concat([image, tf.ones_like(image[..., :1])], axis=2)
    moved = tf.raw_ops.ImageProjectiveTransformV3(
        images=wrapped[None], transforms=tf.constant([transform], tf.float32),
        output_shape=tf.shape(image)[:2], fill_value=0.0, interpolation="NEAREST", fill_mode="CONSTANT",
    )[0]  # fmt: skip
    outside = tf.equal(moved[..., 3:], 0)
    return tf.where(outside, tf.fill(tf.shape(image), tf.constant(128, image.dtype)), moved[..., :3])


def _tf_rotation(degrees: float, height: int, width: int) -> list[float]:
    radians = tf.constant(degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(radians), tf.sin(radians)
    w, h = tf.constant(width - 1, tf.float32), tf.constant(height - 1, tf.float32)
    x_offset = (w - (cos * w - sin * h)) / 2.0
    y_offset = (h - (sin * w + cos * h)) / 2.0
    return [float(v) for v in (cos, -sin, x_offset, sin, cos, y_offset)] + [0.0, 0.0]


def _tf_op(image: np.ndarray, name: str, level: float, negate: bool, constants: tuple[int, int], center):
    img = tf.constant(image)
    sign = -1.0 if negate else 1.0
    translate_const, cutout_const = constants
    enhance = level / 10.0 * 1.8 + 0.1
    height, width = image.shape[:2]
    if name == "AutoContrast":
        channels = []
        for c in range(3):
            ch = img[..., c]
            lo, hi = tf.cast(tf.reduce_min(ch), tf.float32), tf.cast(tf.reduce_max(ch), tf.float32)
            if hi > lo:
                scale = 255.0 / (hi - lo)
                ch = tf.cast(tf.clip_by_value(tf.cast(ch, tf.float32) * scale - lo * scale, 0.0, 255.0), tf.uint8)
            channels.append(ch)
        return tf.stack(channels, 2)
    if name == "Equalize":
        channels = []
        for c in range(3):
            ch = tf.cast(img[..., c], tf.int32)
            hist = tf.histogram_fixed_width(ch, [0, 255], nbins=256)
            nonzero = tf.reshape(tf.gather(hist, tf.where(hist != 0)), [-1])
            step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
            if step == 0:
                channels.append(tf.cast(ch, tf.uint8))
                continue
            lut = tf.clip_by_value(tf.concat([[0], ((tf.cumsum(hist) + step // 2) // step)[:-1]], 0), 0, 255)
            channels.append(tf.cast(tf.gather(lut, ch), tf.uint8))
        return tf.stack(channels, 2)
    if name == "Invert":
        return 255 - img
    if name == "Rotate":
        return _tf_fill_outside(img, _tf_rotation(sign * level / 10.0 * 30.0, height, width))
    if name == "Posterize":
        shift = 8 - int(level / 10.0 * 4)
        return tf.bitwise.left_shift(tf.bitwise.right_shift(img, shift), shift)
    if name == "Solarize":
        return tf.where(img < int(level / 10.0 * 256), img, 255 - img)
    if name == "SolarizeAdd":
        added = tf.cast(tf.clip_by_value(tf.cast(img, tf.int64) + int(level / 10.0 * 110), 0, 255), tf.uint8)
        return tf.where(img < 128, added, img)
    if name == "Color":
        return _tf_blend(tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(img)), img, enhance)
    if name == "Contrast":
        gray = tf.cast(tf.image.rgb_to_grayscale(img), tf.int32)
        mean = tf.reduce_sum(tf.cast(tf.histogram_fixed_width(gray, [0, 255], nbins=256), tf.float32)) / 256.0
        flat = tf.clip_by_value(tf.ones_like(gray, tf.float32) * mean, 0.0, 255.0)
        return _tf_blend(tf.image.grayscale_to_rgb(tf.cast(flat, tf.uint8)), img, enhance)
    if name == "Brightness":
        return _tf_blend(tf.zeros_like(img), img, enhance)
    if name == "Sharpness":
        kernel = tf.tile(tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32, [3, 3, 1, 1]) / 13.0, [1, 1, 3, 1])
        smooth = tf.nn.depthwise_conv2d(tf.cast(img, tf.float32)[None], kernel, [1, 1, 1, 1], "VALID")[0]
        smooth = tf.pad(tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8), [[1, 1], [1, 1], [0, 0]])
        border = tf.pad(tf.ones_like(smooth[1:-1, 1:-1]), [[1, 1], [1, 1], [0, 0]])
        return _tf_blend(tf.where(tf.equal(border, 1), smooth, img), img, enhance)
    if name in ("ShearX", "ShearY"):
        shear = sign * level / 10.0 * 0.3
        matrix = [1.0, shear, 0.0, 0.0, 1.0, 0.0] if name == "ShearX" else [1.0, 0.0, 0.0, shear, 1.0, 0.0]
        return _tf_fill_outside(img, matrix + [0.0, 0.0])
    if name in ("TranslateX", "TranslateY"):
        pixels = sign * level / 10.0 * translate_const
        offset = [pixels, 0.0] if name == "TranslateX" else [0.0, pixels]
        return _tf_fill_outside(img, [1.0, 0.0, offset[0], 0.0, 1.0, offset[1], 0.0, 0.0])
    if name == "Cutout":
        pad = int(level / 10.0 * cutout_const)
        cy, cx = center
        rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
        inside = (rows >= max(0, cy - pad)) & (rows < height - max(0, height - cy - pad))
        inside &= (cols >= max(0, cx - pad)) & (cols < width - max(0, width - cx - pad))
        return tf.where(inside[..., None], tf.constant(128, tf.uint8), img)
    raise KeyError(name)


# Which rule each op is held to. Every op but Sharpness is integer math or element-wise float32
# arithmetic (blends, grayscale, autocontrast's scale), whose IEEE rounding is the same on every
# CPU: exact equality with TensorFlow. Sharpness smooths with a 3x3 float32 convolution whose sums
# TensorFlow rounds differently with AVX-512 than with AVX2; ours is exact (CPU-independent), so it
# equals a float64 evaluation of TensorFlow's formula bit for bit, and differs from TensorFlow only
# at pixels whose exact smoothed value is within FLOAT_SUM_EPSILON of an integer.
FLOAT_REDUCTION_OPS = ("Sharpness",)
FLOAT_SUM_EPSILON = 1e-4


@pytest.mark.parametrize("name", RANDAUGMENT_OPS)
@pytest.mark.parametrize("level", [1.0, 5.0, 6.6666667, 10.0, 15.0])
def test_each_randaugment_op_equals_the_tensorflow_reference(name: str, level: float) -> None:
    for image in IMAGES:
        for negate in (False, True):
            center = (image.shape[0] // 3, image.shape[1] - 4)
            ours = apply_op(image, name, level, negate, center=center)
            reference = _tf_op(image, name, level, negate, (100, 40), center).numpy()
            assert ours.dtype == np.uint8 and ours.shape == image.shape
            if name in FLOAT_REDUCTION_OPS:
                _assert_sharpness_matches(image, level, ours, reference)
            else:
                np.testing.assert_array_equal(ours, reference, err_msg=f"{name} level {level} negate {negate}")


def _exact_smoothing(image: np.ndarray) -> np.ndarray:
    """TensorFlow's Sharpness smoothing (float32 kernel weights) summed in float64: [H-2, W-2, 3]."""
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / np.float32(13.0)
    height, width = image.shape[:2]
    total = np.zeros((height - 2, width - 2, 3), np.float64)
    for dy in range(3):
        for dx in range(3):
            total += image[dy : dy + height - 2, dx : dx + width - 2].astype(np.float64) * np.float64(kernel[dy, dx])
    return total


def _assert_sharpness_matches(image: np.ndarray, level: float, ours: np.ndarray, tensorflow: np.ndarray) -> None:
    smooth = _exact_smoothing(image)
    degenerate = image.copy()
    degenerate[1:-1, 1:-1] = np.floor(np.clip(smooth, 0.0, 255.0)).astype(np.uint8)
    exact = _tf_blend(degenerate, image, level / 10.0 * 1.8 + 0.1).numpy()
    np.testing.assert_array_equal(ours, exact, err_msg=f"Sharpness level {level} vs the float64 reference")
    near_integer = np.zeros(image.shape, bool)
    near_integer[1:-1, 1:-1] = np.abs(smooth - np.round(smooth)) < FLOAT_SUM_EPSILON
    differs = ours != tensorflow
    assert not (differs & ~near_integer).any(), f"Sharpness level {level}: differs from TensorFlow off a boundary"
    assert np.abs(ours.astype(int) - tensorflow.astype(int)).max(initial=0) <= 2  # factor <= 2.8 times 1 level


@pytest.mark.parametrize("name", ["TranslateY", "Cutout"])
def test_autoaugment_constants_are_its_own(name: str) -> None:
    image = IMAGES[1]
    ours = apply_op(image, name, 3.0, False, AUTOAUGMENT_CONSTANTS, center=(10, 10))
    reference = _tf_op(image, name, 3.0, False, (250, 100), (10, 10)).numpy()
    np.testing.assert_array_equal(ours, reference)


def test_levels_above_ten_extrapolate_and_quirks_follow_the_code() -> None:
    image = IMAGES[1]
    # rotate 45 degrees at level 15 (30 at 10): more of the frame is filled with 128
    filled = [int((apply_op(image, "Rotate", level) == 128).all(axis=2).sum()) for level in (10.0, 15.0)]
    assert filled[1] > filled[0] > 0
    # solarize: level 10's threshold 256 wraps to 0 in uint8, so every pixel is inverted
    np.testing.assert_array_equal(apply_op(image, "Solarize", 10.0), 255 - image)


# ---- resizes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(17, 29), (64, 64), (100, 45)])
def test_bilinear_resize_equals_tf_image_resize(size: tuple[int, int]) -> None:
    for image in IMAGES:
        ours = geometry.resize(image, *size, "bilinear")
        reference = tf.image.resize(tf.constant(image), size, method="bilinear").numpy()
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, reference, atol=2e-4)


@pytest.mark.parametrize("size", [(17, 29), (64, 64), (100, 45)])
def test_bicubic_resize_equals_tf1_resize_bicubic(size: tuple[int, int]) -> None:
    for image in IMAGES:
        ours = geometry.resize(image, *size, "bicubic")
        reference = tf.compat.v1.image.resize_bicubic(tf.constant(image)[None], size)[0].numpy()
        np.testing.assert_allclose(ours, reference, atol=2e-3)


def _numpy_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """tf.image.resize's bilinear formula in plain numpy float32 (the implementation the compiled
    loop replaced): along x, then between the two rows."""

    def taps(in_size: int, out_size: int):
        position = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * np.float32(in_size / out_size)
        position = position - np.float32(0.5)
        floor = np.floor(position)
        lower = np.maximum(floor, 0).astype(np.int64)
        upper = np.minimum(np.ceil(position), in_size - 1).astype(np.int64)
        return lower, upper, (position - floor).astype(np.float32)

    image = image.astype(np.float32)
    y_lower, y_upper, y_lerp = taps(image.shape[0], height)
    x_lower, x_upper, x_lerp = taps(image.shape[1], width)

    def along_x(rows: np.ndarray) -> np.ndarray:
        return rows[:, x_lower] + (rows[:, x_upper] - rows[:, x_lower]) * x_lerp[None, :, None]

    top, bottom = along_x(image[y_lower]), along_x(image[y_upper])
    return top + (bottom - top) * y_lerp[:, None, None]


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("truncate", [False, True])
def test_bilinear_resize_of_a_box_mirrored_or_truncated_is_the_plain_formula(mirror: bool, truncate: bool) -> None:
    """The crop read through the taps, the flip folded into them and the uint8 cast on store give
    the bits of: crop, resize by the formula, flip, clip and truncate."""
    for image in IMAGES:
        box = geometry.CropBox(3, 5, image.shape[0] - 9, image.shape[1] - 11)
        for size in ((17, 29), (64, 64), (5, 90)):
            ours = geometry.resize(image, *size, mirror=mirror, truncate=truncate, box=box)
            expected = _numpy_bilinear(box.apply(image), *size)
            expected = expected[:, ::-1] if mirror else expected
            expected = np.clip(expected, 0.0, 255.0).astype(np.uint8) if truncate else expected
            assert ours.dtype == expected.dtype
            np.testing.assert_array_equal(ours, expected, err_msg=f"{size} mirror {mirror} truncate {truncate}")
    bicubic = geometry.resize(IMAGES[1], 20, 30, "bicubic", box=geometry.CropBox(2, 1, 30, 33))
    mirrored = geometry.resize(IMAGES[1], 20, 30, "bicubic", mirror=True, box=geometry.CropBox(2, 1, 30, 33))
    np.testing.assert_array_equal(mirrored, bicubic[:, ::-1])


# ---- the crop sampler ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,area,covered,attempts",
    [((300, 400), (0.05, 1.0), 0.0, 100), ((32, 32), (0.08, 1.0), 0.1, 10), ((12, 90), (0.5, 1.0), 0.0, 5)],
)
def test_the_crop_sampler_has_tensorflows_distribution(shape, area, covered, attempts) -> None:
    """sample_distorted_bounding_box with the whole image as its box: the same area and aspect
    statistics (and the same rate of failed samples, which return the whole image)."""
    height, width = shape
    aspect = (0.75, 1.33)
    rng = np.random.default_rng(0)
    samples = 3000
    ours = []
    for _ in range(samples):
        box = geometry.sample_crop(rng, height, width, area, aspect, covered, attempts)
        ours.append((height, width) if box is None else (box.height, box.width))
        if box is not None:
            assert 0 <= box.top <= height - box.height and 0 <= box.left <= width - box.width
    tf.random.set_seed(0)
    theirs = []
    for _ in range(samples):
        _, size, _ = tf.image.sample_distorted_bounding_box(
            [height, width, 3], tf.zeros([0, 0, 4]), min_object_covered=covered, aspect_ratio_range=aspect,
            area_range=area, max_attempts=attempts, use_image_if_no_bounding_boxes=True,
        )  # fmt: skip
        theirs.append((int(size[0]), int(size[1])))
    statistics = (
        lambda h, w: h * w / (height * width),  # area fraction
        lambda h, w: w / h,  # aspect ratio
        lambda h, w: float(h == height and w == width),  # the whole image: a failed sample
    )
    for stat in statistics:
        a = np.array([stat(*s) for s in ours])
        b = np.array([stat(*s) for s in theirs])
        assert abs(a.mean() - b.mean()) < 0.03 * max(1.0, b.mean()), (a.mean(), b.mean())
        assert abs(np.median(a) - np.median(b)) < 0.05 * max(1.0, np.median(b)), (np.median(a), np.median(b))


# ---- evaluation crop and the whole eval transform --------------------------------------------
def _png(image: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), np.uint8)


def _data_cfg(**values):
    from types import SimpleNamespace

    augment = SimpleNamespace(
        randaug_layers=0, randaug_magnitude=10.0, auto_augment="none", cutout_ratio=0.0, cutout_fill="black",
        random_erasing_prob=0.0,
    )  # fmt: skip
    base = dict(
        crop_scale=[0.05, 1.0], crop_ratio=[0.75, 1.33], crop_min_covered=0.0, crop_attempts=100, crop_fallback="full",
        train_crop="random_resized_crop", interpolation="bilinear", hflip_prob=0.5, eval_crop="official",
        crop_pct=0.875, mean=[128.0] * 3, std=[128.0] * 3, augment=augment, decode="exact",
    )  # fmt: skip
    base.update(values)
    return SimpleNamespace(**base)


@pytest.mark.parametrize("size", [24, 320])
def test_official_eval_equals_preprocess_for_eval(size: int) -> None:
    from effv2.data.transforms import EvalTransform

    image = np.repeat(IMAGES[1], 9, axis=0)[:, :, :]  # 432 x 40: not square
    ours = EvalTransform(_data_cfg(), size)(_png(image))
    img = tf.constant(image)
    if size < 320:
        side = tf.cast((size / (size + 32)) * tf.cast(tf.minimum(432, 40), tf.float32), tf.int32)
        img = tf.image.crop_to_bounding_box(img, (432 - side) // 2, (40 - side) // 2, side, side)
    reference = (tf.image.resize(img, [size, size]) - 128.0) / 128.0
    np.testing.assert_allclose(ours, reference.numpy().transpose(2, 0, 1), atol=2e-6)


def test_legacy_eval_equals_preprocess_legacy() -> None:
    from effv2.data.transforms import EvalTransform

    image = np.repeat(IMAGES[0], 3, axis=1)  # 37 x 159
    mean, std = [0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255]
    cfg = _data_cfg(eval_crop="official_v1", interpolation="bicubic", mean=mean, std=std)
    ours = EvalTransform(cfg, 30)(_png(image))
    side = int((30 / 62) * 37)
    crop = tf.image.crop_to_bounding_box(tf.constant(image), (37 - side + 1) // 2, (159 - side + 1) // 2, side, side)
    reference = (tf.compat.v1.image.resize_bicubic(crop[None], [30, 30])[0] - mean) / std
    np.testing.assert_allclose(ours, reference.numpy().transpose(2, 0, 1), atol=2e-5)


# ---- per-image keyed randomness ------------------------------------------------------------------
def test_training_randomness_is_a_function_of_seed_epoch_and_image() -> None:
    from effv2.data.transforms import TrainTransform

    cfg = _data_cfg()
    cfg.augment.randaug_layers, cfg.augment.cutout_ratio, cfg.augment.random_erasing_prob = 2, 0.5, 0.5
    transform = TrainTransform(cfg, 24)
    encoded = _png(IMAGES[1])
    first = transform(encoded, np.array([0, 1, 5]))
    np.testing.assert_array_equal(first, transform(encoded, np.array([0, 1, 5])))
    others = [transform(encoded, np.array(key)) for key in ([0, 2, 5], [0, 1, 6], [1, 1, 5])]
    assert all(not np.array_equal(first, other) for other in others)
    assert first.shape == (3, 24, 24) and first.dtype == np.float32
