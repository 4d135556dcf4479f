"""Inside the ranks of a data-parallel job: communication, sharding helpers, reductions.

A single-process run sees rank 0 of 1 and every helper degrades to a no-op, so the training
and evaluation code is the same with one process or many.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# set by run.py (effv2.launch.processes) in every process it starts, so run.py inside a rank never re-launches
WORKER_ENV = "EFFV2_WORKER"


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_current = RankInfo()


def current() -> RankInfo:
    return _current


def init_ranks() -> RankInfo:
    """Join the job's communication group (HCCL / NCCL / MCCL) and set data parallelism."""
    global _current
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    init()
    _current = RankInfo(get_rank(), get_group_size())
    ms.set_auto_parallel_context(
        parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True, device_num=_current.world_size
    )
    return _current


class _AllReduce:
    """Sums a flat float64 vector over the ranks (one compiled graph per vector length)."""

    def __init__(self) -> None:
        from mindspore import nn, ops

        class Sum(nn.Cell):
            def __init__(self) -> None:
                super().__init__()
                self.reduce = ops.AllReduce()

            def construct(self, x):
                return self.reduce(x)

        self.cell = Sum()

    def __call__(self, values: np.ndarray) -> np.ndarray:
        from mindspore import Tensor

        return self.cell(Tensor(values.astype(np.float32))).asnumpy().astype(np.float64)


_reducer: _AllReduce | None = None


def allreduce_sum(values: np.ndarray) -> np.ndarray:
    global _reducer
    if not _current.distributed:
        return values
    _reducer = _reducer or _AllReduce()
    return _reducer(values)


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank; a collective that every rank calls at the same step."""
    if not _current.distributed:
        return flag
    return bool(allreduce_sum(np.array([float(flag)]))[0] > 0)


def average_bn_statistics(net) -> None:
    """Average BN moving mean / variance over the ranks (each rank saw other batches), so every
    rank evaluates and saves the same model."""
    if not _current.distributed:
        return
    from mindspore import Tensor

    stats = [p for p in net.get_parameters() if p.name.endswith(("moving_mean", "moving_variance"))]
    flat = np.concatenate([p.asnumpy().ravel() for p in stats])
    averaged = allreduce_sum(flat) / _current.world_size
    offset = 0
    for param in stats:
        size = int(np.prod(param.shape))
        param.set_data(Tensor(averaged[offset : offset + size].reshape(param.shape).astype(np.float32)))
        offset += size


def weights_digest(net) -> str:
    """A digest of the model's parameters and BN statistics; not of ``rng_step``, which numbers
    each rank's own micro-batches."""
    digest = hashlib.sha256()
    for param in sorted(net.get_parameters(), key=lambda p: p.name):
        if param.name == "rng_step":
            continue
        digest.update(param.name.encode())
        digest.update(np.ascontiguousarray(param.asnumpy()).tobytes())
    return digest.hexdigest()


def rank_status_path(run_dir: Path, rank: int) -> Path:
    return run_dir / "ranks" / f"rank_{rank}.json"


def write_rank_status(run_dir: Path, **fields) -> None:
    path = rank_status_path(run_dir, _current.rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, "rank": _current.rank, "pid": os.getpid(), **fields}))


_beating = False


def heartbeat(run_dir: Path) -> None:
    """Show the launching run.py this rank is making progress: the status file's mtime, touched before
    and after every step. When one rank hangs the others soon block in its collective, so the
    rank that stopped first has the oldest mtime.

    The first beat marks the status file, so run.py only starts watching a rank once its
    first step (and graph compile) is done."""
    global _beating
    if not _current.distributed:
        return
    if _beating:
        os.utime(rank_status_path(run_dir, _current.rank))
    else:
        write_rank_status(run_dir, heartbeat=True)
        _beating = True
