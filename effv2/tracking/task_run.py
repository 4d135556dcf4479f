"""The loggers of an eval, export or infer run: each such run is a run of its own in them (an
MLflow run named after the task and its checkpoint, TensorBoard events in its run folder under
the task's tag set), holding the result once."""

from __future__ import annotations

import logging
from pathlib import Path

from effv2.config.schema import RunConfig
from effv2.tracking.base import Logger, Loggers, RunStatus, TaskResult
from effv2.tracking.build import build_loggers

log = logging.getLogger(__name__)


def record_task(cfg: RunConfig, run_dir: Path, result: TaskResult, writer: bool = True) -> None:
    """Write ``result`` to the configured loggers that keep results (TensorBoard, MLflow; the task
    writes its own metrics.json / report, csv's part), none on a rank other than 0 (``writer``)."""
    chosen = build_loggers(cfg, run_dir, writer=writer).loggers
    loggers = Loggers([logger for logger in chosen if type(logger).log_result is not Logger.log_result])
    if not loggers.loggers:
        return
    loggers.start()
    try:
        loggers.log_result(result)
    except BaseException:
        loggers.finish(None, RunStatus.FAILED)
        raise
    loggers.finish(None, RunStatus.FINISHED)
    log.info("%s result logged to %s", result.task, ", ".join(logger.name for logger in loggers.loggers))
