"""Task entry points: one function per ``task=`` value, each returning its main metric."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from effv2.errors import UserError
from effv2.launch.device import init_device, prepare_environment

log = logging.getLogger(__name__)


def _train(cfg: Any, run_dir: Path) -> float:
    from effv2.tasks.train import run

    return run(cfg, run_dir)


def _eval(cfg: Any, run_dir: Path) -> float:
    from effv2.tasks.evaluate import run

    return run(cfg, run_dir)


def _not_built(issue: str) -> Callable[[Any, Path], float]:
    def refuse(cfg: Any, run_dir: Path) -> float:
        raise UserError(f"task={cfg.task.name.name} is not built yet ({issue}); available tasks: train, eval")

    return refuse


TASKS: dict[str, Callable[[Any, Path], float]] = {
    "train": _train,
    "eval": _eval,
    "export": _not_built("export and inference are a separate work item"),
    "infer": _not_built("export and inference are a separate work item"),
}


def run_task(cfg: Any, run_dir: Path) -> float:
    """Prepare the process for the configured hardware, then run the task."""
    task = cfg.task.name.name
    prepare_environment(cfg.hardware)
    if TASKS[task] in (_train, _eval):
        init_device(cfg.hardware, task)
    return TASKS[task](cfg, run_dir)
