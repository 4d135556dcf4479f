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

    # logger.<key> set (not null) -> that logger, in this order
    kinds: dict[str, type[Logger]] = {"csv": CSVLogger, "tensorboard": TensorBoardLogger, "mlflow": MLflowLogger}
    context = RunContext.of(cfg, run_dir)
    chosen = {key: getattr(cfg.logger, key) for key in kinds}
    return Loggers([kinds[key](settings, context) for key, settings in chosen.items() if settings is not None])
