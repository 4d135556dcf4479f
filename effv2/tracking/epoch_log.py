"""Per-epoch metrics file (CSV) and the final metrics JSON of a run folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

EPOCH_COLUMNS = (
    "epoch",
    "stage",
    "image_size",
    "lr",
    "train_loss",
    "val_top1",
    "val_top5",
    "ema_val_top1",
    "ema_val_top5",
    "images_per_s",
    "seconds",
    # the fraction of the epoch's seconds spent waiting for the data pipeline
    "data_wait",
    "overflow_steps",
    "loss_scale",
    # images the epoch trained over all ranks, and the remainder no global batch took
    "train_images",
    "dropped_images",
    # training images that did not decode and were replaced by their substitutes (all ranks)
    "bad_images",
)


class EpochLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def append(self, row: dict[str, Any]) -> None:
        rows = self.rows()
        if rows and list(rows[0]) != list(EPOCH_COLUMNS):  # written by an older effv2: same values, new header
            partial = self.path.with_suffix(".partial")
            with partial.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=EPOCH_COLUMNS)
                writer.writeheader()
                writer.writerows({key: old.get(key, "") for key in EPOCH_COLUMNS} for old in rows)
            partial.replace(self.path)
        new = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=EPOCH_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({key: row.get(key, "") for key in EPOCH_COLUMNS})


def write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
