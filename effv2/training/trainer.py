"""The training loop: epochs of compiled steps, periodic evaluation, checkpoints, exact resume."""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mindspore import Tensor
from tqdm import tqdm

from effv2.checkpoints import BEST, LAST, RECOVERY, model_entries, restore_state, state_entries
from effv2.config.schema import RunConfig
from effv2.data.pipeline import train_stream
from effv2.data.sharding import epoch_order
from effv2.errors import Interrupted
from effv2.launch import ranks, slurm
from effv2.progressive import Stage, build_schedule, stage_of
from effv2.step_plan import build_step_plan, runs_of
from effv2.tracking.base import ResumePoint, RunStatus
from effv2.tracking.build import build_loggers
from effv2.tracking.epoch_log import write_json
from effv2.training import report, setup
from effv2.training.loss import smoothed_one_hot
from effv2.training.mixing import BatchMixer
from effv2.training.optim import scaled_lr
from effv2.training.resume import check_resumable, continued_progress
from effv2.training.run_folder import Progress, RunFolder, find_resume_checkpoint, run_identity
from effv2.training.schedules import learning_rates
from effv2.training.scoring import score_split
from effv2.training.step import ACCUMULATE, APPLY
from effv2.training.stop import StopRequests, diverged, interrupted

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    best: float
    final: dict[str, float]


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        train = cfg.train
        setup.seed_everything(cfg.seed)
        self.workers = cfg.hardware.num_workers
        self.ranks = ranks.current()
        self.world_size = self.ranks.world_size
        self.main = self.ranks.is_main
        data = setup.open_data(cfg, run_dir, self.ranks)
        self.split, self.val_data, self.bad_images, self.plan = data.split, data.val_data, data.bad_images, data.plan
        self.accumulation = train.accumulation_steps
        self.global_batch = self.plan.global_batch
        self.steps = build_step_plan(train, self.split.num_images, self.global_batch)
        self.schedule = build_schedule(cfg, self.steps)
        base_lr = scaled_lr(cfg.optimizer, self.global_batch)
        steps = self.steps
        self.lrs = learning_rates(cfg.scheduler, base_lr, steps.steps_per_epoch, steps.total_steps, steps.decay_steps)

        built = setup.build(cfg, run_dir, self.schedule, self.lrs, self.world_size, self.ranks.distributed)
        self.net, self.ema, self.step, self.shadow_net = built.net, built.ema, built.step, built.shadow_net
        self.device_normalise = built.device_normalise
        self.stage: Stage | None = None  # set by _enter_stage at the first step
        self.mixer = BatchMixer(cfg.data.augment, cfg.seed)
        self.progress = Progress()
        identity = run_identity(cfg, self.split, self.schedule, self.plan, self.steps)
        self.folder = RunFolder(run_dir, identity, writer=self.main)
        self.loggers = build_loggers(cfg, run_dir, writer=self.main)
        self.stop = StopRequests()
        if len(self.schedule) > 1:
            log.info(report.schedule_lines(cfg, self.schedule))
        log.info(report.plan_line(cfg, self.plan, self.steps, base_lr, self.val_data.split.num_images))

    def _enter_stage(self, stage: Stage) -> None:
        """Switch dropout and mixing to ``stage`` when it changes (the data pipeline of each stage
        is its own). Compiled graphs are cached per input shape, so only a new image size compiles."""
        if stage == self.stage:
            return
        self.stage = stage
        self.net.dropout.set_rate(stage["dropout"])
        self.mixer = BatchMixer(self.cfg.data.augment, self.cfg.seed, stage)
        if len(self.schedule) > 1:
            log.info(report.stage_line(stage, len(self.schedule), self.cfg.data.augment.randaug_layers > 0, self.steps))

    # ---- checkpoints (layout and metadata: effv2.training.run_folder) -------------------
    def _meta(self, metrics: dict[str, float] | None = None, **extra: Any) -> dict[str, Any]:
        return self.folder.meta(
            self.progress, metrics, stage=self.stage.index if self.stage else 0, loggers=self.loggers.state(), **extra
        )

    def _sync_ranks(self) -> None:
        """Average the BN running statistics (raw and EMA) over the ranks. Between two calls each
        rank's statistics follow only its own micro-batches; the update is linear, so averaging
        at any point gives the same result as averaging at the end. Every rank calls this at the
        same step: before each evaluation and each checkpoint."""
        ranks.average_bn_statistics(self.net)
        if self.shadow_net is not None:
            ranks.average_bn_statistics(self.shadow_net)

    def _epoch_loss(self) -> tuple[float, int, int]:
        """(sum, count) of the finite training losses of the epoch so far and the bad images
        replaced in it, over all ranks."""
        progress = self.progress
        total = ranks.allreduce_sum(np.array([progress.loss_sum, progress.loss_count, progress.bad_images], np.float64))
        return float(total[0]), int(round(total[1])), int(round(total[2]))

    def _save_state(self, name: str, metrics: dict[str, float] | None = None) -> None:
        """A resumable checkpoint; collective: every rank calls it at the same step."""
        self._sync_ranks()
        loss_sum, loss_count, bad_images = self._epoch_loss()
        entries = state_entries(self.step, self.net, self.shadow_net)
        extra = {"loss_sum": loss_sum, "loss_count": loss_count, "bad_images": bad_images}
        self.folder.save(name, entries, self._meta(metrics, **extra))

    def _save_model(self, path: str | Path, metrics: dict[str, float]) -> None:
        self.folder.save(path, model_entries(self.net, self.shadow_net), self._meta(metrics))

    def resume(self, resume: str) -> None:
        path = find_resume_checkpoint(resume)
        meta = restore_state(state_entries(self.step, self.net, self.shadow_net), path)
        check_resumable(path, meta, self.folder.identity, self.plan)
        self.progress = progress = continued_progress(meta, self.main)
        log.info("resumed from %s at epoch %d, %d steps done", path, progress.epoch, progress.steps_done)
        self.folder.adopt(path, progress)
        global_step = self.steps.epoch_start(progress.epoch) + progress.steps_done
        self.loggers.adopt(ResumePoint(path.parent.parent, progress.epoch, global_step, meta.get("loggers", {})))

    # ---- the loop ----------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """The epoch's remaining steps, a data pipeline per stage they train in."""
        progress = self.progress
        start, end = self.steps.epoch_start(epoch), self.steps.epoch_end(epoch)
        started = time.perf_counter()
        waited = 0.0
        steps_at_start = progress.steps_done
        step = start + progress.steps_done  # the global step about to run
        bar = tqdm(total=(end - start) * self.accumulation, initial=progress.steps_done * self.accumulation,
                   desc=f"epoch {epoch}", disable=None)  # fmt: skip
        while step < end:
            stage = stage_of(self.schedule, step)
            self._enter_stage(stage)
            segment_end = min(end, stage.end_step)
            waited += self._train_steps(epoch, step, segment_end, bar)
            step = segment_end
        if self.stage is None:  # resumed at an epoch whose every step was done (stopped on its last one)
            self._enter_stage(stage_of(self.schedule, end - 1))
        bar.close()
        seconds = time.perf_counter() - started
        trained = (progress.steps_done - steps_at_start) * self.global_batch  # over all ranks
        loss_sum, loss_count, substituted = self._epoch_loss()
        return {
            "epoch": epoch,
            "stage": self.stage.index,
            "image_size": self.stage.image_size,
            "lr": float(self.lrs[end - 1]),
            "train_loss": loss_sum / loss_count if loss_count else "",
            "images_per_s": trained / seconds if trained else "",
            "overflow_steps": progress.overflow_steps,
            "loss_scale": float(self.step.scale.asnumpy()[0]),
            "seconds": seconds,
            "data_wait": waited / seconds if trained else "",
            "train_images": (end - start) * self.global_batch,
            "dropped_images": self.steps.dropped_per_epoch(),
            "bad_images": substituted,
        }

    def _train_steps(self, epoch: int, first: int, end: int, bar: tqdm) -> float:
        """Global steps ``first`` .. ``end - 1``, all in one stage and in ``epoch``; the seconds the
        steps waited for their batches."""
        cfg, progress, stage = self.cfg, self.progress, self.stage
        rank = self.ranks.rank
        passes, indices = self.steps.stream(first, end, lambda n: epoch_order(self.split.num_images, cfg.seed, n))
        runs = runs_of(self.plan.rank_indices(passes, rank), self.plan.rank_indices(indices, rank))
        # the counter that keys dropout / drop-path masks: the global number of the micro-batch
        # about to run; the step adds world_size after each micro-batch
        first_micro = first * self.accumulation  # this rank's, counted from the start of the run
        self.net.rng_step.set_data(Tensor(np.array([self.plan.global_micro(first_micro, rank)], np.int64)))
        record_to = None
        if cfg.data.record_reads:
            (self.run_dir / "reads").mkdir(exist_ok=True)
            record_to = self.run_dir / "reads" / f"epoch{epoch:04d}_rank{rank}.txt"
        dataset = train_stream(
            cfg.data, self.split, runs, self.workers, stage.image_size, record_to, cfg.seed,
            uint8_out=self.device_normalise, stage=stage,
        )  # fmt: skip
        interval = cfg.train.checkpoint.recovery_interval
        waited = 0.0
        ready = time.perf_counter()
        for micro, batch_arrays in enumerate(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)):
            waited += time.perf_counter() - ready  # the step waited this long for its batch
            apply = (micro + 1) % self.accumulation == 0
            if micro > 0:  # not before the first step: its compile may take long
                ranks.heartbeat(self.run_dir)
            step_index = first + micro // self.accumulation
            loss = self._micro_batch(step_index, first_micro + micro, *batch_arrays, apply=apply)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.lrs[step_index]:.3g}")
            if apply:
                progress.steps_done += 1
                self.loggers.log_step(step_index + 1, {"loss": loss, "lr": float(self.lrs[step_index])})
                if interval > 0 and (step_index + 1) % interval == 0:
                    self._save_state(RECOVERY)
                if ranks.any_rank(self.stop.signal_number is not None):
                    bar.close()
                    self._interrupt(epoch, step_index + 1)
            ready = time.perf_counter()
        return waited

    def _micro_batch(
        self, step_index: int, run_micro: int, images: np.ndarray, labels: np.ndarray, replaced: np.ndarray,
        apply: bool,
    ) -> float:  # fmt: skip
        """One micro-batch (this rank's number ``run_micro`` of the run) of global step
        ``step_index`` through the compiled step (and the optimizer update after the last of a
        step's micro-batches); its loss. Stops the run on a loss that became infinite or NaN."""
        cfg, progress = self.cfg, self.progress
        progress.bad_images += self.bad_images.report(replaced[:, 0], replaced[:, 1])
        global_micro = self.plan.global_micro(run_micro, self.ranks.rank)
        targets = smoothed_one_hot(labels, cfg.model.num_classes, cfg.train.label_smoothing)
        images, targets = self.mixer(images, targets, global_micro)
        if self.accumulation == 1:
            loss, finite = self.step(Tensor(images), Tensor(targets))
        else:
            loss, finite = self.step(Tensor(images), Tensor(targets), ACCUMULATE)
            if apply:
                finite = self.step(None, None, APPLY)
        loss = float(loss.asnumpy())
        ranks.heartbeat(self.run_dir)
        if not bool(finite.asnumpy()):
            progress.overflow_steps += 1
            if cfg.train.loss_scale.kind.name != "dynamic":
                self._stop_on_divergence(step_index, loss)
        elif not math.isfinite(loss):
            self._stop_on_divergence(step_index, loss)
        if math.isfinite(loss):
            progress.loss_sum += loss
            progress.loss_count += 1
        return loss

    def _interrupt(self, epoch: int, steps_done: int) -> None:
        self._save_state(RECOVERY)
        number = self.stop.signal_number
        requeued = self.main and not self.ranks.distributed and slurm.requeue_after(number)
        raise interrupted(number, steps_done, epoch, self.folder.ckpt_dir / RECOVERY, self.run_dir, requeued)

    def _stop_on_divergence(self, step_index: int, loss: float) -> None:
        raise diverged(loss, step_index + 1, self.steps.epoch_of(step_index), self.folder.ckpt_dir / LAST)

    def _score(self) -> dict[str, float]:
        self._sync_ranks()
        val = score_split(self.net, self.val_data, self.run_dir)
        metrics = {"val_top1": val["top1"], "val_top5": val["top5"]}
        if self.shadow_net is not None:
            ema_val = score_split(self.shadow_net, self.val_data, self.run_dir)
            metrics.update(ema_val_top1=ema_val["top1"], ema_val_top5=ema_val["top5"])
        return metrics

    def fit(self) -> TrainResult:
        cfg = self.cfg
        epochs = self.steps.epochs
        best_key = cfg.train.checkpoint.best_metric.name
        metrics: dict[str, float] = {}
        for epoch in range(self.progress.epoch, epochs + 1):
            self.progress.epoch = epoch
            self.step.set_train(True)
            row = self._train_epoch(epoch)
            if epoch % cfg.train.eval_interval == 0 or epoch == epochs:
                metrics = self._score()
                row.update(metrics)
                if metrics[best_key] > self.progress.best:
                    self.progress.best = metrics[best_key]
                    self._save_model(BEST, metrics)
                self.folder.keep_top_k(
                    cfg.train.checkpoint.keep_top_k, self.progress, metrics[best_key], epoch,
                    functools.partial(self._save_model, metrics=metrics),
                )  # fmt: skip
            self.progress.evaluated = True
            self.loggers.log_epoch(self.steps.epoch_end(epoch), row)
            self._save_state(LAST, metrics)
            self.folder.finish_epoch()
            log.info(report.epoch_line(row, epochs, self.world_size))
            self.progress.next_epoch()
        final = {**metrics, "best_" + best_key: self.progress.best, "epochs": epochs}
        final["overflow_steps"] = self.progress.overflow_steps
        if self.main:
            write_json(self.run_dir / "metrics.json", final)
        if self.ranks.distributed:
            ranks.write_rank_status(self.run_dir, weights=ranks.weights_digest(self.net))
        return TrainResult(best=self.progress.best, final=final)


def train(cfg: RunConfig, run_dir: Path) -> TrainResult:
    trainer = Trainer(cfg, run_dir)
    resume = cfg.resume or slurm.requeued_resume(run_dir)
    if resume:
        trainer.resume(resume)
    loggers = trainer.loggers
    loggers.start()
    try:
        with trainer.stop.installed():
            result = trainer.fit()
    except Interrupted:
        loggers.finish(None, RunStatus.KILLED)
        raise
    except BaseException:
        loggers.finish(None, RunStatus.FAILED)
        raise
    loggers.finish(result.final, RunStatus.FINISHED)
    return result
