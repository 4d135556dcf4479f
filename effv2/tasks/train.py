"""task=train: train, evaluate, keep checkpoints; returns the best val top-1."""

from __future__ import annotations

import logging
from pathlib import Path

from effv2.config.schema import RunConfig
from effv2.training.trainer import train

log = logging.getLogger(__name__)


def run(cfg: RunConfig, run_dir: Path) -> float:
    result = train(cfg, run_dir)
    final = result.final
    ema = f"  EMA top-1 {final['ema_val_top1']:.2f}" if "ema_val_top1" in final else ""
    log.info(
        "done: val top-1 %.2f  top-5 %.2f%s  best %s %.2f  run folder %s",
        final["val_top1"], final["val_top5"], ema, cfg.train.checkpoint.best_metric.name, result.best, run_dir,
    )  # fmt: skip
    return result.best
