"""One rank of a multi-process job: ``python -m effv2.launch.worker <run folder>``.

Reads the config the launching run.py composed, joins the communication group, and runs the
task. Only rank 0 writes the run log, metrics and checkpoints; every rank's console output is
its ``ranks/worker_<rank>.log``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from effv2.config.schema import RunConfig
from effv2.errors import UserError


def load_run_config(run_dir: Path):
    composed = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), composed)
    OmegaConf.set_struct(cfg, True)
    return cfg


def main(run_dir: Path) -> int:
    cfg = load_run_config(run_dir)
    from effv2.launch.compile_cache import enable_compile_cache
    from effv2.launch.device import configure_context, prepare_environment
    from effv2.launch.ranks import init_ranks, write_rank_status

    prepare_environment(cfg.hardware)
    configure_context(cfg.hardware)
    enable_compile_cache(cfg)
    info = init_ranks()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if info.is_main:
        handlers.append(logging.FileHandler(run_dir / "run.log"))
    logging.basicConfig(
        level=logging.INFO, format=f"[%(asctime)s][rank {info.rank}][%(name)s][%(levelname)s] - %(message)s",
        handlers=handlers, force=True,
    )  # fmt: skip
    write_rank_status(run_dir, status="running")
    from effv2.tasks import TASKS

    try:
        metric = TASKS[cfg.task.name.name](cfg, run_dir)
    except UserError as exc:
        logging.getLogger("effv2").error("error: %s", exc)
        return 2
    write_rank_status(run_dir, status="done", metric=metric)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
