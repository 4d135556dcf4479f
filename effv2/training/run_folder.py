"""What a training run keeps in its folder, and how a resumed run finds and adopts it.

Layout (rank 0 writes it, every write atomic; the loggers' files: ``effv2.tracking``):

    checkpoints/last.ckpt                 the full training state after the last epoch
    checkpoints/recovery.ckpt             the full state mid-epoch, removed at the epoch's end
    checkpoints/best.ckpt, top/*.ckpt     model (+ EMA) weights of the best and top-k epochs

Every checkpoint carries metadata: the run's identity (variant, classes, eval size, schedule,
batch plan), where training stands (:class:`Progress`) and the metrics of the epoch.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mindspore import Parameter

from effv2.checkpoints import BEST, LAST, RECOVERY, read_checkpoint, save_atomic
from effv2.config.schema import RunConfig
from effv2.data.sharding import BatchPlan
from effv2.data.split import ImageSplit
from effv2.errors import UserError
from effv2.progressive import Stage
from effv2.step_plan import StepPlan


@dataclass
class Progress:
    """Where training stands; stored in every checkpoint's metadata."""

    epoch: int = 1  # the epoch in progress (1-based)
    steps_done: int = 0  # optimizer steps of that epoch already taken
    evaluated: bool = False  # whether that epoch's evaluation and checkpoints are done
    best: float = -math.inf
    top_k: list = field(default_factory=list)  # [[metric, epoch, file name], ...] best first
    overflow_steps: int = 0
    loss_sum: float = 0.0  # this rank's finite losses of the epoch in progress, for its mean
    loss_count: int = 0
    bad_images: int = 0  # this rank's training images replaced by substitutes in the epoch in progress

    def as_meta(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "steps_done": self.steps_done,
            "evaluated": self.evaluated,
            "best": self.best,
            "top_k": self.top_k,
            "overflow_steps": self.overflow_steps,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "bad_images": self.bad_images,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Progress:
        defaults = cls().as_meta()  # a key newer than the checkpoint keeps its default
        return cls(**{key: meta.get(key, default) for key, default in defaults.items()})

    def next_epoch(self) -> None:
        self.epoch, self.steps_done, self.evaluated = self.epoch + 1, 0, False
        self.loss_sum, self.loss_count, self.bad_images = 0.0, 0, 0


def find_resume_checkpoint(resume: str) -> Path:
    """``resume=`` names a checkpoint, or a run folder whose newest resumable checkpoint is used."""
    path = Path(resume).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"resume={resume!r} is neither a checkpoint file nor a run folder")
    candidates = [path / "checkpoints" / name for name in (LAST, RECOVERY)]
    candidates = [c for c in candidates if c.is_file()]
    if not candidates:
        raise UserError(f"resume={resume!r} holds no checkpoints/{LAST} or checkpoints/{RECOVERY} to resume from")

    def position(candidate: Path) -> tuple[int, int, bool]:
        meta = read_checkpoint(candidate)[1]
        return meta.get("epoch", 0), meta.get("steps_done", 0), meta.get("evaluated", False)

    return max(candidates, key=position)


def run_identity(
    cfg: RunConfig, split: ImageSplit, schedule: list[Stage], plan: BatchPlan, steps: StepPlan
) -> dict[str, Any]:
    """What every checkpoint of the run says it is: model, classes, training split, eval size,
    schedule, batch plan and step counting (what a resume checks, effv2.training.resume)."""
    return {
        "variant": cfg.model.name,
        "num_classes": cfg.model.num_classes,
        "class_names": list(split.class_names),
        "train_images": split.num_images,
        "train_fingerprint": split.fingerprint,
        "eval_size": cfg.data.eval_size,
        "schedule": [stage.as_row() for stage in schedule],
        "plan": {
            "batch_size": plan.batch_size,
            "world_size": plan.world_size,
            "accumulation": plan.accumulation,
            "global_batch": plan.global_batch,
        },
        "steps": {"counting": steps.counting.value, "total_steps": steps.total_steps, "epochs": steps.epochs},
    }


class RunFolder:
    """The checkpoints, metrics and curves of one run. ``identity`` is the metadata every
    checkpoint repeats (variant, classes, eval size, schedule, batch plan); on ranks other than
    rank 0 (``writer=False``) nothing is written."""

    def __init__(self, run_dir: Path, identity: dict[str, Any], writer: bool) -> None:
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.identity = identity
        self.writer = writer

    def meta(self, progress: Progress, metrics: dict[str, float] | None = None, **extra: Any) -> dict[str, Any]:
        return {**self.identity, "metrics": metrics or {}, **progress.as_meta(), **extra}

    def save(self, name: str | Path, entries: dict[str, Parameter], meta: dict[str, Any]) -> None:
        """A checkpoint under checkpoints/ (``name``) or at a path of its own."""
        if self.writer:
            save_atomic(entries, self.ckpt_dir / name, meta)

    def keep_top_k(
        self, keep: int, progress: Progress, metric: float, epoch: int, save_model: Callable[[Path], None]
    ) -> None:
        """Keep the ``keep`` best epochs' weights under checkpoints/top/; ``progress.top_k`` lists
        them best first (a resumed run continues the same list)."""
        if keep <= 0:
            return
        top_dir = self.ckpt_dir / "top"
        if self.writer:
            top_dir.mkdir(exist_ok=True)
        name = f"epoch{epoch:04d}_{metric:.3f}.ckpt"
        candidates = sorted([*progress.top_k, [metric, epoch, name]], key=lambda item: (-item[0], item[1]))
        progress.top_k = candidates[:keep]
        if [metric, epoch, name] in progress.top_k:
            save_model(top_dir / name)
        for _, _, dropped in candidates[keep:]:
            if self.writer:
                (top_dir / dropped).unlink(missing_ok=True)

    def finish_epoch(self) -> None:
        """The epoch's recovery checkpoint is superseded by last.ckpt."""
        if self.writer:
            (self.ckpt_dir / RECOVERY).unlink(missing_ok=True)

    def adopt(self, checkpoint: Path, progress: Progress) -> None:
        """Continue the history of the run that wrote ``checkpoint``: its top-k and best
        checkpoints (its metrics: the loggers' ``adopt``)."""
        if not self.writer or checkpoint.parent.resolve() == self.ckpt_dir.resolve():
            return  # resumed in its own folder (a requeued job): its files are already here
        for _, _, name in progress.top_k:
            source = checkpoint.parent / "top" / name
            if source.is_file():
                (self.ckpt_dir / "top").mkdir(exist_ok=True)
                shutil.copy2(source, self.ckpt_dir / "top" / name)
        if (checkpoint.parent / BEST).is_file():
            shutil.copy2(checkpoint.parent / BEST, self.ckpt_dir / BEST)
