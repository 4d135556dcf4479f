"""Soft-target cross-entropy: one loss for hard labels with smoothing and for mixup / cutmix."""

from __future__ import annotations

import numpy as np
from mindspore import nn, ops


class SoftTargetCrossEntropy(nn.Cell):
    """mean over the batch of -sum_c target_c * log_softmax(logits)_c."""

    def construct(self, logits, targets):
        return (-targets * ops.log_softmax(logits, -1)).sum(-1).mean()


def smoothed_one_hot(labels: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
    """TensorFlow's label smoothing: one_hot * (1 - s) + s / num_classes."""
    targets = np.full((labels.shape[0], num_classes), smoothing / num_classes, np.float32)
    targets[np.arange(labels.shape[0]), labels] += 1.0 - smoothing
    return targets
