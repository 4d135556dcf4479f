"""One rank of a multi-process job: ``python -m effv2.tasks.rank <run folder> <node>``.

Reads the config the launching run.py of its node composed, joins the communication group, and runs the
task through the same sequence as a single process. Only rank 0 writes the run log, metrics
and checkpoints; every rank's console output is its ``ranks/worker_<rank>.log``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from effv2.config.schema import load_run_config
from effv2.errors import UserError


def _join(run_dir: Path) -> None:
    from effv2.launch.ranks import init_ranks, write_rank_status

    info = init_ranks()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if info.is_main:
        handlers.append(logging.FileHandler(run_dir / "run.log"))
    logging.basicConfig(
        level=logging.INFO, format=f"[%(asctime)s][rank {info.rank}][%(name)s][%(levelname)s] - %(message)s",
        handlers=handlers, force=True,
    )  # fmt: skip
    write_rank_status(run_dir, status="running")


def _mark_failed(run_dir: Path) -> None:
    """The rank ends with an error: its status says so, so that the launcher reports msrun's exit
    code rather than a lost rank (effv2.launch.processes)."""
    from effv2.launch.ranks import write_rank_status

    with contextlib.suppress(Exception):  # before the ranks joined there is no rank to write for
        write_rank_status(run_dir, status="failed")


def main(run_dir: Path, node: int = 0) -> int:
    from effv2.launch.ranks import write_rank_status
    from effv2.tasks import run_in_process

    cfg = load_run_config(run_dir, node)
    try:
        metric = run_in_process(cfg, run_dir, join_ranks=lambda: _join(run_dir))
    except UserError as exc:
        logging.getLogger("effv2").error("error: %s", exc)
        _mark_failed(run_dir)
        return 2
    except BaseException:
        _mark_failed(run_dir)
        raise
    write_rank_status(run_dir, status="done", metric=metric)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
