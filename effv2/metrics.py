"""Accuracy of a batch of logits, the one definition that training, evaluation, the export
parity checks and inference share."""

from __future__ import annotations

import numpy as np


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows rank their label among the first ``k`` classes, ranking by logit and equal
    logits by class index (a stable sort; top-1 is argmax). Quantized models tie often, so the
    tie rule must be fixed for top-k to be reproducible."""
    k = min(k, logits.shape[1])
    labels = np.asarray(labels)
    target = logits[np.arange(len(labels)), labels][:, None]
    before = np.arange(logits.shape[1])[None, :] < labels[:, None]
    ahead = (logits > target) | ((logits == target) & before)
    return int((ahead.sum(axis=1) < k).sum())
