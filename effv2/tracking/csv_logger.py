"""logger=csv: metrics.csv (a row per epoch) and its plot curves.png in the run folder."""

from __future__ import annotations

from typing import Any

from effv2.config.schema import CSVLoggerConfig
from effv2.tracking.base import Logger, ResumePoint, RunContext
from effv2.tracking.curves import plot_curves
from effv2.tracking.epoch_log import EpochLog

METRICS_CSV = "metrics.csv"


class CSVLogger(Logger):
    name = "csv"

    def __init__(self, cfg: CSVLoggerConfig, context: RunContext) -> None:
        self.plot = cfg.plot
        self.run_dir = context.run_dir
        self.epoch_log = EpochLog(context.run_dir / METRICS_CSV)

    def adopt(self, point: ResumePoint) -> None:
        """The resumed run's rows before the epoch in progress (in its own folder, a requeued
        job: the rows the killed run wrote for later epochs are dropped)."""
        rows = [row for row in EpochLog(point.run_dir / METRICS_CSV).rows() if int(row["epoch"]) < point.epoch]
        if self.epoch_log.path.exists() and self.epoch_log.path.resolve() == (point.run_dir / METRICS_CSV).resolve():
            self.epoch_log.path.unlink()
        for row in rows:
            self.epoch_log.append(row)

    def log_epoch(self, step: int, row: dict[str, Any]) -> None:
        self.epoch_log.append(row)
        if self.plot:
            plot_curves(self.epoch_log.rows(), self.run_dir / "curves.png")
