"""The loggers a run's ``logger`` config selects."""

from __future__ import annotations

from pathlib import Path

from effv2.config.schema import RunConfig
from effv2.tracking.base import Logger, Loggers, RunContext


def build_loggers(cfg: RunConfig, run_dir: Path, writer: bool) -> Loggers:
    """The selected loggers; none on ranks other than rank 0 (``writer=False``)."""
    if not writer:
        return Loggers([])
    from effv2.tracking.csv_logger import CSVLogger
    from effv2.tracking.mlflow_logger import MLflowLogger
    from effv2.tracking.tensorboard_logger import TensorBoardLogger

    context = RunContext.of(cfg, run_dir)
    loggers: list[Logger] = []
    if cfg.logger.csv is not None:
        loggers.append(CSVLogger(cfg.logger.csv, context))
    if cfg.logger.tensorboard is not None:
        loggers.append(TensorBoardLogger(cfg.logger.tensorboard, context))
    if cfg.logger.mlflow is not None:
        loggers.append(MLflowLogger(cfg.logger.mlflow, context))
    return Loggers(loggers)
