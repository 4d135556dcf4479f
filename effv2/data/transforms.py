"""Per-image training and evaluation preprocessing, from encoded bytes to a normalised CHW array.

Training draws every random choice (crop box, flip, RandAugment / AutoAugment ops and signs,
cutout, erasing) from a generator keyed by (seed, epoch, image index): an image gets the same
augmentation in the same epoch whatever the worker, the number of workers or ranks, or an
interruption, so a resumed run continues bit for bit.

Order (google/automl ``preprocessing.py``): decode -> crop box -> resize (float, not rounded)
-> flip -> RandAugment / AutoAugment on uint8 -> normalise -> cutout -> random erasing -> CHW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from effv2.config.schema import DataConfig, choice_name
from effv2.data import geometry, kernels
from effv2.data.augment import autoaugment_v0, randaugment
from effv2.data.decode import BadImage, decode, decode_scaled, downscale_factor, image_size
from effv2.data.image_ops import cutout
from effv2.progressive import Stage

# the official eval crop keeps the whole image from this size on (preprocessing.py)
OFFICIAL_CROP_LIMIT = 320


@dataclass(frozen=True)
class Normalise:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        return (image.astype(np.float32) - mean) / std

    @cached_property
    def _tables(self) -> np.ndarray:
        """The normalised value of each of the 256 uint8 levels, per channel: [3, 256] float32."""
        levels = np.arange(256, dtype=np.float32)[None, :]
        mean, std = np.asarray(self.mean, np.float32)[:, None], np.asarray(self.std, np.float32)[:, None]
        return np.ascontiguousarray((levels - mean) / std)

    def to_chw(self, image: np.ndarray) -> np.ndarray:
        """The same arithmetic fused with the HWC -> CHW transpose (one pass, no temporaries); a
        uint8 image through the per-level tables (the same float32 operations on each level)."""
        if image.dtype == np.uint8:
            return kernels.lookup_chw(np.ascontiguousarray(image), self._tables)
        return kernels.normalise_chw(image, np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32))


def _normalise(data_cfg: DataConfig) -> Normalise:
    return Normalise(tuple(float(v) for v in data_cfg.mean), tuple(float(v) for v in data_cfg.std))


def _to_chw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)


def device_normalise_blocker(data_cfg: DataConfig, stage: Stage | None = None) -> str | None:
    """Why training images must be normalised on the host for ``data_cfg`` (in progressive
    learning's ``stage``: its mixup / cutmix strengths), or None when the transform's last image is
    uint8 (RandAugment / AutoAugment's output) and nothing after it works on normalised floats:
    then the compiled step can normalise it, bit for bit."""
    aug = data_cfg.augment
    mixup, cutmix = (stage["mixup"], stage["cutmix"]) if stage else (aug.mixup_alpha, aug.cutmix_alpha)
    if aug.randaug_layers == 0 and choice_name(aug.auto_augment) == "none":
        return "no RandAugment / AutoAugment: the float resize is normalised unrounded"
    if aug.cutout_ratio > 0:
        return "data.augment.cutout_ratio fills in the normalised space"
    if aug.random_erasing_prob > 0:
        return "data.augment.random_erasing_prob erases in the normalised space"
    if mixup > 0 or cutmix > 0:
        return "mixup / cutmix mix normalised batches on the host"
    return None


class TrainTransform:
    """(encoded image, key = [seed, epoch, image index]) -> normalised float32 CHW, or with
    ``uint8_out`` the uint8 HWC image before normalisation (see device_normalise_blocker). In
    progressive learning the RandAugment magnitude is the ``stage``'s."""

    def __init__(
        self, data_cfg: DataConfig, image_size: int, uint8_out: bool = False, stage: Stage | None = None
    ) -> None:
        blocker = device_normalise_blocker(data_cfg, stage) if uint8_out else None
        if blocker:
            raise ValueError(f"uint8 output needs the host normalisation: {blocker}")
        self.uint8_out = uint8_out
        aug = data_cfg.augment
        self.size = image_size
        self.crop = choice_name(data_cfg.train_crop)
        self.area_range = tuple(float(v) for v in data_cfg.crop_scale)
        self.aspect_range = tuple(float(v) for v in data_cfg.crop_ratio)
        self.min_covered = float(data_cfg.crop_min_covered)
        self.attempts = int(data_cfg.crop_attempts)
        self.fallback = choice_name(data_cfg.crop_fallback)
        self.interpolation = choice_name(data_cfg.interpolation)
        self.hflip_prob = float(data_cfg.hflip_prob)
        self.fast_decode = choice_name(data_cfg.decode) == "fast"
        self.randaug_layers = int(aug.randaug_layers)
        self.randaug_magnitude = float(stage["randaug"] if stage else aug.randaug_magnitude)
        self.auto_augment = choice_name(aug.auto_augment)
        self.cutout_pad = int(image_size * aug.cutout_ratio) // 2
        self.cutout_fill = choice_name(aug.cutout_fill)
        self.erasing_prob = float(aug.random_erasing_prob)
        self.normalise = _normalise(data_cfg)

    def blank(self) -> np.ndarray:
        """Zeros shaped like an output: the row of a bad image the run stops at (bad_images)."""
        if self.uint8_out:
            return np.zeros((self.size, self.size, 3), np.uint8)
        return np.zeros((3, self.size, self.size), np.float32)

    def _crop_box(self, height: int, width: int, rng: np.random.Generator) -> geometry.CropBox | None:
        """The crop of a ``height`` x ``width`` image (None: the whole image), from sizes alone."""
        if self.crop != "random_resized_crop":
            return None
        box = geometry.sample_crop(
            rng, height, width, self.area_range, self.aspect_range, self.min_covered, self.attempts
        )
        whole = box is None or (box.height, box.width) == (height, width)
        if whole and self.fallback == "center":  # the V1 legacy code: the eval centre crop instead
            box = geometry.center_crop_box(height, width, self.size, offset_rounding=1)
        return box

    def _geometry(self, encoded: np.ndarray, rng: np.random.Generator, truncate: bool) -> np.ndarray:
        """Header -> crop box -> flip or not -> decode -> crop -> resize (float32, not rounded; uint8
        truncated with ``truncate``), mirrored by the resize itself when flipped (a contiguous
        result for the ops after it).
        ``data.decode=fast``: a crop of at least twice the size is read from a JPEG decoded at
        1/2, 1/4 or 1/8 scale, bilinearly at the crop's own sub-pixel position."""
        height, width = image_size(encoded)
        box = self._crop_box(height, width, rng)
        flip = self.hflip_prob > 0 and rng.random() < self.hflip_prob
        if self.fast_decode:
            crop = box or geometry.CropBox(0, 0, height, width)
            image, factor = decode_scaled(encoded, downscale_factor(crop.height, crop.width, self.size), height, width)
            if factor > 1:
                return geometry.resize_window(image, crop, factor, self.size, self.size, flip, truncate)
        else:
            image = decode(encoded)
        if image.shape[:2] != (height, width):  # the box came from the header; the loops do not bound-check
            raise BadImage(f"decoded {image.shape[1]}x{image.shape[0]} pixels, the header says {width}x{height}")
        return geometry.resize(image, self.size, self.size, self.interpolation, flip, truncate, box)

    def _erase(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """timm / MindSpore random erasing: a rectangle of 2-33 % of the area, aspect 0.3-3.3
        (log-uniform), set to 0 in the normalised space; up to 10 attempts."""
        height, width = image.shape[:2]
        for _ in range(10):
            area = rng.uniform(0.02, 1 / 3) * height * width
            aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
            erase_h, erase_w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < erase_h < height and 0 < erase_w < width:
                top, left = int(rng.integers(height - erase_h)), int(rng.integers(width - erase_w))
                image = image.copy()
                image[top : top + erase_h, left : left + erase_w] = 0.0
                break
        return image

    def __call__(self, encoded: np.ndarray, key: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([int(k) for k in key])
        augment = self.randaug_layers > 0 or self.auto_augment != "none"
        image = self._geometry(encoded, rng, truncate=augment)  # uint8 for the augmentation ops
        if augment:
            if self.randaug_layers > 0:
                image = randaugment(image, self.randaug_layers, self.randaug_magnitude, rng)
            else:
                image = autoaugment_v0(image, rng)
            if self.uint8_out:
                return np.ascontiguousarray(image)
        if self.cutout_pad == 0 and self.erasing_prob == 0:
            return self.normalise.to_chw(image)
        image = self.normalise(image)
        if self.cutout_pad > 0:
            center = (int(rng.integers(self.size)), int(rng.integers(self.size)))
            if self.cutout_fill == "uniform":  # the official fine-tune: U[0, 1) in the normalised space
                fill = rng.random(image.shape, dtype=np.float32)
            else:  # black in image space
                fill = self.normalise(np.zeros((1, 1, 3), np.float32))
                fill = np.broadcast_to(fill, image.shape)
            image = cutout(image, self.cutout_pad, center, fill)
        if self.erasing_prob > 0 and rng.random() < self.erasing_prob:
            image = self._erase(image, rng)
        return _to_chw(image)


class EvalTransform:
    """encoded image -> normalised float32 CHW; deterministic. The one evaluation preprocessing,
    shared by eval, the export checks and every inference backend."""

    def __init__(self, data_cfg: DataConfig, image_size: int) -> None:
        self.size = image_size
        self.crop = choice_name(data_cfg.eval_crop)
        self.crop_pct = float(data_cfg.crop_pct)
        self.interpolation = choice_name(data_cfg.interpolation)
        self.normalise = _normalise(data_cfg)

    def settings(self) -> dict[str, Any]:
        """Everything this transform does, as plain values (an export records them)."""
        return {
            "image_size": self.size,
            "eval_crop": self.crop,
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "mean": list(self.normalise.mean),
            "std": list(self.normalise.std),
        }

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> EvalTransform:
        transform = cls.__new__(cls)
        transform.size = int(settings["image_size"])
        transform.crop = settings["eval_crop"]
        transform.crop_pct = float(settings["crop_pct"])
        transform.interpolation = settings["interpolation"]
        transform.normalise = Normalise(tuple(settings["mean"]), tuple(settings["std"]))  # type: ignore[arg-type]
        return transform

    def pixels(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB HWC pixels -> normalised float32 CHW."""
        return self.normalise.to_chw(self._geometry(image))

    def _geometry(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        size = self.size
        if self.crop == "center":  # timm: shorter side to size / crop_pct, then the centre
            short = math.floor(size / self.crop_pct)
            scale = short / min(height, width)
            new_h, new_w = (short, int(width * scale)) if height <= width else (int(height * scale), short)
            image = geometry.resize(image, new_h, new_w, self.interpolation)
            top, left = (new_h - size) // 2, (new_w - size) // 2
            return image[top : top + size, left : left + size]
        box = None
        if self.crop == "official" and size < OFFICIAL_CROP_LIMIT:
            box = geometry.center_crop_box(height, width, size)
        elif self.crop == "official_v1":
            box = geometry.center_crop_box(height, width, size, offset_rounding=1)
        return geometry.resize(image, size, size, self.interpolation, box=box)

    def __call__(self, encoded: np.ndarray) -> np.ndarray:
        return self.pixels(decode(encoded))
