"""Mixup and cutmix on host batches: timm's semantics (one lambda per batch, probability,
switch) or the official code's (google/automl ``datasets.py``: a lambda per image).

They run on the numpy batch before it enters the graph, drawing from a generator keyed by
(seed, global micro-batch number): a resumed run mixes exactly the batches an uninterrupted run
would, and a data-parallel run the batches one process with accumulation would.
"""

from __future__ import annotations

import numpy as np

from effv2.config.schema import AugmentConfig, choice_name
from effv2.progressive import Stage


class BatchMixer:
    def __init__(self, augment: AugmentConfig, seed: int, stage: Stage | None = None) -> None:
        """Strengths from progressive learning's ``stage`` where given, else from ``augment``."""
        self.mixup_alpha = float(stage["mixup"] if stage else augment.mixup_alpha)
        self.cutmix_alpha = float(stage["cutmix"] if stage else augment.cutmix_alpha)
        self.mix_prob = float(augment.mix_prob)
        self.switch_prob = float(augment.switch_prob)
        self.official = choice_name(augment.mix_mode) == "official"
        self.seed = seed

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __call__(self, images: np.ndarray, targets: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Mix a batch [N, C, H, W] with soft targets [N, classes]; partners are the reversed batch."""
        if not self.enabled:
            return images, targets
        rng = np.random.default_rng((self.seed, step))
        if self.official:
            return self._official(images, targets, rng)
        if rng.random() >= self.mix_prob:
            return images, targets
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        flipped = images[::-1]
        if use_cutmix:
            height, width = images.shape[2:]
            cut = np.sqrt(1.0 - lam)
            cut_h, cut_w = int(height * cut), int(width * cut)
            cy, cx = rng.integers(height), rng.integers(width)
            top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
            left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
            images = images.copy()
            images[:, :, top:bottom, left:right] = flipped[:, :, top:bottom, left:right]
            # the label weight follows the pasted area after clipping at the border
            lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
        else:
            images = (images * lam + flipped * (1.0 - lam)).astype(images.dtype)
        targets = (targets * lam + targets[::-1] * (1.0 - lam)).astype(targets.dtype)
        return images, targets

    def _official(
        self, images: np.ndarray, targets: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """google/automl ``datasets.py`` ``mixing``: with both alphas the first half of the batch
        gets mixup and the second cutmix, each mixed with its own half reversed."""
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            half = len(images) // 2
            first = self._official_mixup(images[:half], targets[:half], rng)
            second = self._official_cutmix(images[half:], targets[half:], rng)
            return np.concatenate([first[0], second[0]]), np.concatenate([first[1], second[1]])
        if self.mixup_alpha > 0:
            return self._official_mixup(images, targets, rng)
        return self._official_cutmix(images, targets, rng)

    def _official_mixup(
        self, images: np.ndarray, targets: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        weight = rng.beta(self.mixup_alpha, self.mixup_alpha, size=(len(images), 1)).astype(np.float32)
        weight = np.maximum(weight, 1.0 - weight)
        mixed = images * weight[:, :, None, None] + images[::-1] * (1.0 - weight[:, :, None, None])
        return mixed.astype(images.dtype), (targets * weight + targets[::-1] * (1.0 - weight)).astype(targets.dtype)

    def _official_cutmix(
        self, images: np.ndarray, targets: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """A box per image (cutmix_mask), pasted from the reversed batch; the labels mix by the
        pasted fraction of the whole batch, one number for every image as in the official code."""
        height, width = images.shape[2:]
        masks = np.zeros((len(images), 1, height, width), np.float32)
        for mask in masks:
            cx, cy = rng.integers(width), rng.integers(height)
            ratio = np.sqrt(1.0 - rng.beta(self.cutmix_alpha, self.cutmix_alpha))
            cut_w, cut_h = int(ratio * width), int(ratio * height)
            left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
            top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
            mask[:, top:bottom, left:right] = 1.0
        area = float(masks.mean())
        mixed = (1.0 - masks) * images + masks * images[::-1]
        return mixed.astype(images.dtype), (targets * (1.0 - area) + targets[::-1] * area).astype(targets.dtype)
