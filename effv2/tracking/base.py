"""What every logger is given and what it implements; the set of loggers a run writes to."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from effv2.config.schema import choice_name
from effv2.errors import UserError

log = logging.getLogger(__name__)
TRACKING_EXTRA = "tracking"


class RunStatus(Enum):
    """How a run ended, in MLflow's terms."""

    FINISHED = "FINISHED"
    KILLED = "KILLED"  # SIGTERM / SIGINT: a recovery checkpoint was written
    FAILED = "FAILED"


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues: the run folder of its checkpoint, the epoch in progress,
    the global optimizer steps already taken and the loggers' state stored in the checkpoint."""

    run_dir: Path
    epoch: int
    global_step: int
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunContext:
    """What the loggers know of the run beyond its config, read from the run folder's
    ``.hydra/hydra.yaml`` (present in every process, launched ranks included)."""

    run_dir: Path
    config_yaml: str
    flat_config: dict[str, Any]
    multirun: bool = False
    job_name: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def sweep_dir(self) -> Path | None:
        return self.run_dir.parent if self.multirun else None  # hydra.sweep.subdir is the job number

    @classmethod
    def of(cls, cfg: Any, run_dir: Path) -> RunContext:
        container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        hydra_file = run_dir / ".hydra" / "hydra.yaml"
        multirun, job_name, choices = False, run_dir.name, {}
        if hydra_file.is_file():
            hydra = OmegaConf.load(hydra_file).hydra
            multirun = str(hydra.mode) == "MULTIRUN"
            choices = {k: str(v) for k, v in hydra.runtime.choices.items() if not k.startswith("hydra/")}
            if multirun:
                job_name = f"{hydra.job.num}: {hydra.job.override_dirname}"
        task = choice_name(cfg.task.name)
        subject = _subject(cfg, task)
        if task != "train" and not multirun:
            job_name = f"{task} {Path(subject).name}" if subject else task
        tags = {
            "task": task,
            **({"checkpoint": subject} if subject else {}),
            "variant": str(cfg.model.name),
            "hardware": str(cfg.hardware.name),
            "experiment": choices.get("experiment", ""),
            "data": choices.get("data", str(cfg.data.name)),
            "run_dir": str(run_dir),
        }
        return cls(
            run_dir=run_dir,
            config_yaml=OmegaConf.to_yaml(container),
            flat_config=flatten(container),
            multirun=multirun,
            job_name=job_name,
            tags=tags,
        )


def _subject(cfg: Any, task: str) -> str:
    """What a task ran on, for its run's name: the checkpoint (or the exported model infer read)."""
    if task == "infer" and cfg.infer.model:
        return str(cfg.infer.model)
    if task == "convert":
        return str(cfg.convert.source or "")
    return str(cfg.ckpt or "")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": value}: scalars as they are, lists as their text."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    value = tree if isinstance(tree, int | float | str | bool) or tree is None else str(tree)
    return {prefix.rstrip("."): "null" if value is None else value}


def numeric(row: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics row (blank cells and text left out)."""
    return {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def require(module: str, logger: str) -> Any:
    """Import an optional dependency of a logger, or stop with the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"logger={logger} needs {module.split('.')[0]}: pip install 'effv2[{TRACKING_EXTRA}]'"
        ) from None


class Logger:
    """A logger that does nothing; the real ones override what they record."""

    name = "none"

    def adopt(self, point: ResumePoint) -> None:
        """Continue the history of the run that ``point`` resumes."""

    def start(self) -> None:
        """Open files / runs; called once, before the first step."""

    def log_step(self, step: int, values: dict[str, float]) -> None:
        """Per-step values (training loss, learning rate) after optimizer step ``step``."""

    def log_epoch(self, step: int, row: dict[str, Any]) -> None:
        """The epoch's metrics row, at the global step the epoch ended on."""

    def state(self) -> dict[str, Any]:
        """What a resumed run needs to find this run again (stored in checkpoints); called just
        before each checkpoint is written, so what was logged so far is made durable here."""
        return {}

    def finish(self, final: dict[str, Any] | None, status: RunStatus) -> None:
        """Close; ``final``: the run's final metrics (None when it did not finish)."""

    def log_result(self, result: TaskResult) -> None:
        """What an eval, export or infer run found (effv2.tracking.task_run), once, between
        start() and finish()."""


@dataclass(frozen=True)
class TaskResult:
    """The outcome of a task other than training: its metrics (accuracy, parity, INT8 drop, file
    sizes), params (what it ran on: checkpoint, format, backend) and files to keep (reports)."""

    task: str
    metrics: dict[str, float]
    params: dict[str, str] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)


class Loggers(Logger):
    """The loggers of one run, called in turn; one that fails on close does not stop the others."""

    def __init__(self, loggers: list[Logger]) -> None:
        self.loggers = loggers

    def adopt(self, point: ResumePoint) -> None:
        for logger in self.loggers:
            logger.adopt(point)

    def start(self) -> None:
        for logger in self.loggers:
            logger.start()

    def log_step(self, step: int, values: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log_step(step, values)

    def log_epoch(self, step: int, row: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_epoch(step, row)

    def state(self) -> dict[str, Any]:
        return {k: v for logger in self.loggers for k, v in logger.state().items()}

    def log_result(self, result: TaskResult) -> None:
        for logger in self.loggers:
            logger.log_result(result)

    def finish(self, final: dict[str, Any] | None, status: RunStatus) -> None:
        for logger in self.loggers:
            try:
                logger.finish(final, status)
            except Exception as exc:  # a logger's close must not hide how the run ended
                log.warning("logger %s did not close cleanly: %s: %s", logger.name, type(exc).__name__, exc)
