"""Mixup and cutmix on host batches, with timm's semantics (alpha, probability, switch).

They run on the numpy batch before it enters the graph, drawing from a generator keyed by
(seed, global step): a resumed run mixes exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class BatchMixer:
    def __init__(self, augment: Any, seed: int) -> None:
        self.mixup_alpha = float(augment.mixup_alpha)
        self.cutmix_alpha = float(augment.cutmix_alpha)
        self.mix_prob = float(augment.mix_prob)
        self.switch_prob = float(augment.switch_prob)
        self.seed = seed

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __call__(self, images: np.ndarray, targets: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Mix a batch [N, C, H, W] with soft targets [N, classes]; partners are the reversed batch."""
        if not self.enabled:
            return images, targets
        rng = np.random.default_rng((self.seed, step))
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
