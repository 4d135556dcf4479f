"""logger=tensorboard: event files in <run folder>/tensorboard, written with tensorboardX.

Scalars are at the global optimizer step: ``train/loss`` and ``train/lr`` every
``log_every_n_steps`` steps, ``epoch/*`` (losses, top-1/5, learning rate, images/s, data wait,
image size) at each epoch's last step; the composed config as text; the hyperparameters with
the final metrics (TensorBoard's HPARAMS tab) when the run finishes. A resumed run copies the
event files of the run it continues and writes on with ``purge_step``: TensorBoard drops what the
interrupted run logged after the checkpoint, so every step appears once. An eval, export or
infer run writes its result as ``<task>/<metric>`` scalars and a ``<task>/params`` text at step
0 in its own run folder's events.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from effv2.config.schema import TensorBoardLoggerConfig
from effv2.tracking.base import Logger, ResumePoint, RunContext, RunStatus, TaskResult, numeric, require

FOLDER = "tensorboard"
EPOCH_SCALARS = (
    "train_loss", "val_top1", "val_top5", "ema_val_top1", "ema_val_top5", "lr", "images_per_s", "data_wait",
    "seconds", "image_size", "overflow_steps", "loss_scale",
)  # fmt: skip


class TensorBoardLogger(Logger):
    name = "tensorboard"

    def __init__(self, cfg: TensorBoardLoggerConfig, context: RunContext) -> None:
        self.every = cfg.log_every_n_steps
        self.context = context
        self.logdir = context.run_dir / FOLDER
        self.purge_step: int | None = None
        self.writer: Any = None
        self.files = 0  # event files this process opened (their names must differ)
        self.unsaved = False  # values logged since the last checkpoint

    def adopt(self, point: ResumePoint) -> None:
        previous = point.run_dir / FOLDER
        if previous.is_dir() and previous.resolve() != self.logdir.resolve():
            shutil.copytree(previous, self.logdir, dirs_exist_ok=True)
        self.purge_step = point.global_step + 1

    def _open(self, purge_step: int | None = None) -> None:
        tensorboardx = require("tensorboardX", self.name)
        self.files += 1
        # tensorboardX names files by the second: a per-process counter keeps two apart
        suffix = f".{os.getpid()}.{self.files}"
        self.writer = tensorboardx.SummaryWriter(
            str(self.logdir), purge_step=purge_step, flush_secs=30, filename_suffix=suffix
        )

    def start(self) -> None:
        self._open(self.purge_step)
        if self.purge_step is None:
            self.writer.add_text("config", f"```yaml\n{self.context.config_yaml}```", 0)

    def log_step(self, step: int, values: dict[str, float]) -> None:
        if self.every > 0 and step % self.every == 0:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, step)
            self.unsaved = True

    def log_epoch(self, step: int, row: dict[str, Any]) -> None:
        values = numeric(row)
        for key in EPOCH_SCALARS:
            if key in values:
                self.writer.add_scalar(f"epoch/{key}", values[key], step)
        self.writer.add_scalar("epoch/epoch", values["epoch"], step)
        self.unsaved = True

    def log_result(self, result: TaskResult) -> None:
        for key, value in result.metrics.items():
            self.writer.add_scalar(f"{result.task}/{key}", value, 0)
        lines = [f"- {key}: {value}" for key, value in result.params.items()]
        self.writer.add_text(f"{result.task}/params", "\n".join(lines) or "-", 0)

    def state(self) -> dict[str, Any]:
        # a checkpoint follows: what was logged up to it must be on disk (and mirrored) first, or a
        # resume after SIGKILL would purge past steps that never reached the file. tensorboardX's
        # flush() leaves its queue to a writer thread; only close() drains it, so the file is
        # closed and the next values go to a new one
        if self.writer is not None and self.unsaved:
            self.writer.close()
            self._open()
            self.unsaved = False
        return {}

    def finish(self, final: dict[str, Any] | None, status: RunStatus) -> None:
        if self.writer is None:
            return
        if final is not None:
            self.writer.add_hparams(
                self.context.flat_config, {f"hparam/{k}": v for k, v in numeric(final).items()}, name="hparams"
            )
        self.writer.close()
