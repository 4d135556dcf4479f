"""task=train: train, evaluate, keep checkpoints; returns the best val top-1."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from effv2.training.trainer import train

log = logging.getLogger(__name__)


def run(cfg: Any, run_dir: Path) -> float:
    result = train(cfg, run_dir)
    final = result.final
    log.info(
        "done: val top-1 %.2f  top-5 %.2f  best top-1 %.2f  run folder %s",
        final["val_top1"], final["val_top5"], result.best_top1, run_dir,
    )  # fmt: skip
    return result.best_top1
