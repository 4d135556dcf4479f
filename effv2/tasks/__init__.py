"""Task entry points: one function per ``task=`` value, each returning its main metric."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from effv2.config.schema import RequiredValue
from effv2.errors import UserError
from effv2.launch.compile_cache import enable_compile_cache
from effv2.launch.device import check_device, configure_context, prepare_environment
from effv2.launch.launcher import launch, needs_launch, print_plan

log = logging.getLogger(__name__)


def _train(cfg: Any, run_dir: Path) -> float:
    from effv2.tasks.train import run

    return run(cfg, run_dir)


def _eval(cfg: Any, run_dir: Path) -> float:
    from effv2.tasks.evaluate import run

    return run(cfg, run_dir)


def _export(cfg: Any, run_dir: Path) -> float:
    from effv2.deploy.export import run

    return run(cfg, run_dir)


def _infer(cfg: Any, run_dir: Path) -> float:
    from effv2.deploy.infer import run

    return run(cfg, run_dir)


def _convert(cfg: Any, run_dir: Path) -> float:
    from effv2.conversion.convert import run

    return run(cfg, run_dir)


TASKS: dict[str, Callable[[Any, Path], float]] = {
    "train": _train,
    "eval": _eval,
    "export": _export,
    "infer": _infer,
    "convert": _convert,
}


def _check_complete(cfg: Any) -> None:
    """Every value present and every interpolation resolvable, before any work starts."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as exc:
        cause = exc.__cause__ or exc.__context__
        while cause is not None and not isinstance(cause, RequiredValue):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise UserError(str(cause)) from None
        raise UserError(f"{exc.full_key}: {str(exc).splitlines()[0]}") from None
    if missing:
        raise UserError(f"no value for {', '.join(missing)}; give it on the command line ({missing[0]}=...)")


# the tasks a multi-device hardware option runs on every rank; the others run as one process
DATA_PARALLEL_TASKS = ("train", "eval")


def run_task(cfg: Any, run_dir: Path, multirun: bool = False) -> float:
    """Prepare the process for the configured hardware, then run the task."""
    task = cfg.task.name.name
    _check_complete(cfg)
    if task == "convert":  # numpy and a checkpoint file: no device involved
        prepare_environment(cfg.hardware)
        return TASKS[task](cfg, run_dir)
    if cfg.launcher.dry_run:
        return print_plan(cfg, run_dir)
    if needs_launch(cfg.hardware):
        if task in DATA_PARALLEL_TASKS:
            check_device(cfg.hardware, task)
            return launch(cfg, run_dir)
        log.info("task=%s runs as one process on one %s device of hardware=%s", task,
                 cfg.hardware.device_target.name, cfg.hardware.name)  # fmt: skip
    prepare_environment(cfg.hardware)
    check_device(cfg.hardware, task)
    configure_context(cfg.hardware)
    enable_compile_cache(cfg, multirun)
    return TASKS[task](cfg, run_dir)
