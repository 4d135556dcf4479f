"""A PNG of the training curves (loss, learning rate, top-1), refreshed after every epoch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(float(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(*_series(rows, "train_loss"), marker="o")
    axes[0].set_title("train loss")
    axes[1].plot(*_series(rows, "lr"), marker="o", color="tab:orange")
    axes[1].set_title("learning rate")
    axes[2].plot(*_series(rows, "val_top1"), marker="o", label="raw")
    if any(r.get("ema_val_top1") not in (None, "") for r in rows):
        axes[2].plot(*_series(rows, "ema_val_top1"), marker="s", label="EMA")
    axes[2].set_title("val top-1 (%)")
    axes[2].legend()
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(tmp, dpi=80)
    plt.close(figure)
    os.replace(tmp, path)
