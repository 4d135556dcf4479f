"""The tasks: one thin module per ``task=`` value (train, evaluate, export, infer, convert), each
with ``run(cfg, run_dir) -> float`` returning its main metric for sweepers, and the one sequence
that runs a task in a process, shared by ``run.py`` and every launched rank (``tasks/rank.py``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from effv2.config.schema import RequiredValue, RunConfig, task_of
from effv2.config.validate import validate
from effv2.errors import UserError
from effv2.launch.compile_cache import enable_compile_cache
from effv2.launch.device import check_device, configure_context, prepare_environment
from effv2.launch.processes import launch, needs_launch, print_plan
from effv2.storage.remote_inputs import with_local_inputs

log = logging.getLogger(__name__)

# task= value -> module in this package; imported on demand, so that a task's MindSpore
# imports happen after prepare_environment
TASK_MODULES = {"train": "train", "eval": "evaluate", "export": "export", "infer": "infer", "convert": "convert"}
# the tasks a multi-device hardware option runs on every rank; the others run as one process
DATA_PARALLEL_TASKS = ("train", "eval")


def task_function(task: str) -> Callable[[RunConfig, Path], float]:
    return importlib.import_module(f"effv2.tasks.{TASK_MODULES[task]}").run


def _check_complete(cfg: RunConfig) -> None:
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


def run_in_process(
    cfg: RunConfig, run_dir: Path, multirun: bool = False, join_ranks: Callable[[], None] | None = None
) -> float:
    """Run the task in this process: environment before MindSpore loads, the device check, the
    execution context, the compile cache, then (in a launched rank) ``join_ranks``, then the task."""
    task = task_of(cfg)
    prepare_environment(cfg.hardware, task)
    cfg = with_local_inputs(cfg, task)
    if task == "convert":  # numpy and a checkpoint file: no device involved
        return task_function(task)(cfg, run_dir)
    check_device(cfg.hardware, task)
    configure_context(cfg.hardware)
    enable_compile_cache(cfg, multirun)
    if join_ranks is not None:
        join_ranks()
    return task_function(task)(cfg, run_dir)


def run_task(cfg: RunConfig, run_dir: Path, multirun: bool = False) -> float:
    """``run.py``'s task: print the launch plan, or run it (every rank, or here as one process)
    with the run folder mirrored to ``output.remote`` when set."""
    _check_complete(cfg)
    validate(cfg)  # every value, before a rank, a device or MindSpore is touched
    from effv2.launch import slurm

    slurm.log_job()
    if task_of(cfg) != "convert" and cfg.distributed.dry_run:
        return print_plan(cfg, run_dir)
    if not cfg.output.remote:
        return _run(cfg, run_dir, multirun)
    from effv2.storage.location import join
    from effv2.storage.mirror import RunMirror

    remote = join(cfg.output.remote, run_dir.name) if multirun else cfg.output.remote
    with RunMirror(run_dir, remote, cfg.output.sync_interval, cfg.output.upload_retries):
        return _run(cfg, run_dir, multirun)


def _pin_data(cfg: RunConfig, run_dir: Path) -> None:
    """List (or fetch) the task's splits once on this node, before any rank starts: the ranks read
    the manifests pinned in the run folder instead of each listing the folder."""
    prepare_environment(cfg.hardware, task_of(cfg))
    from effv2.data.pipeline import pin_splits

    data = cfg.data
    splits = [data.train_split, data.val_split] if task_of(cfg) == "train" else [data.val_split]
    pin_splits(data, splits, run_dir, cfg.hardware.node_rank)


def _run(cfg: RunConfig, run_dir: Path, multirun: bool) -> float:
    task = task_of(cfg)
    if task != "convert" and needs_launch(cfg.hardware):
        if task in DATA_PARALLEL_TASKS:
            check_device(cfg.hardware, task)
            _pin_data(cfg, run_dir)
            return launch(cfg, run_dir)
        log.info("task=%s runs as one process on one %s device of hardware=%s", task,
                 cfg.hardware.device_target.name, cfg.hardware.name)  # fmt: skip
    return run_in_process(cfg, run_dir, multirun)
