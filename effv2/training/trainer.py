"""The training loop: epochs of compiled steps, periodic evaluation, checkpoints, exact resume."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
from mindspore import Tensor, nn
from tqdm import tqdm

from effv2.checkpoints import BEST, LAST, RECOVERY, load_pretrained, model_entries, restore_state, state_entries
from effv2.config.schema import RunConfig
from effv2.data.bad_images import BadImageLog
from effv2.data.pipeline import build_eval_split, open_train_split, train_epoch
from effv2.data.sharding import BatchPlan, epoch_order
from effv2.data.transforms import device_normalise_blocker
from effv2.errors import Interrupted, UserError
from effv2.launch import ranks, slurm
from effv2.models import build_model, get_variant, model_summary
from effv2.models.blocks import convert_to_sync_bn
from effv2.models.cpu_kernels import cpu_kernels_wanted, use_cpu_kernels
from effv2.progressive import Stage, build_schedule, format_schedule, stage_data_config, stage_of
from effv2.tracking.base import ResumePoint, RunStatus
from effv2.tracking.build import build_loggers
from effv2.tracking.epoch_log import write_json
from effv2.training.ema import EMA
from effv2.training.evaluate import evaluate
from effv2.training.loss import SoftTargetCrossEntropy, smoothed_one_hot
from effv2.training.mixing import BatchMixer
from effv2.training.optim import build_optimizer, scaled_lr
from effv2.training.precision import apply_amp
from effv2.training.run_folder import Progress, RunFolder, find_resume_checkpoint
from effv2.training.schedules import learning_rates
from effv2.training.step import ACCUMULATE, APPLY, DeviceNormalise, TrainStep

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    best: float
    final: dict[str, float]


def seed_everything(seed: int) -> None:
    ms.set_seed(seed)
    ds.config.set_seed(seed)
    np.random.seed(seed)


class StopRequests:
    """Turns SIGTERM / SIGINT, and SLURM's time-limit warning (SIGUSR2), into a request the loop
    honours after the current step (effv2.launch.slurm)."""

    def __init__(self) -> None:
        self.signal_number: int | None = None

    def _handle(self, signal_number: int, frame: object) -> None:
        self.signal_number = signal_number

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        signals = (signal.SIGTERM, signal.SIGINT, slurm.TIMEOUT_SIGNAL)
        previous = {sig: signal.signal(sig, self._handle) for sig in signals}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        train = cfg.train
        self.schedule = build_schedule(cfg, default_dropout=get_variant(cfg.model.name).dropout)
        seed_everything(cfg.seed)
        self.workers = cfg.hardware.num_workers
        self.ranks = ranks.current()
        self.world_size = self.ranks.world_size
        self.main = self.ranks.is_main
        # a launched rank reads the manifests the launching process pinned in the run folder
        pinned_in = run_dir if self.ranks.distributed else None
        node = self.ranks.rank // cfg.hardware.devices_per_node
        self.split = open_train_split(cfg.data, pinned_in, node)
        self.bad_images = BadImageLog(self.split, cfg.data.on_bad_image.value, "training")
        self.val_data = build_eval_split(
            cfg.data, self.workers, shard=(self.ranks.rank, self.world_size), run_dir=pinned_in, node=node
        )
        if self.split.class_names != self.val_data.split.class_names:
            raise UserError(
                f"train and val class folders differ under {self.split.path.parent}: "
                f"{len(self.split.class_names)} vs {len(self.val_data.split.class_names)} classes"
            )
        self.accumulation = train.accumulation_steps
        self.plan = BatchPlan(cfg.data.batch_size, self.world_size, self.accumulation)
        self.steps_per_epoch = self.plan.steps_per_epoch(self.split.num_images)
        if self.steps_per_epoch == 0:
            raise UserError(
                f"data.batch_size={self.plan.describe()} (the global batch: batch x devices x "
                f"train.accumulation_steps) exceeds the {self.split.num_images} training images; lower them"
            )
        self.micro_per_epoch = self.steps_per_epoch * self.accumulation  # per rank
        self.global_batch = self.plan.global_batch
        base_lr = scaled_lr(cfg.optimizer, self.global_batch)
        self.lrs = learning_rates(cfg.scheduler, base_lr, self.steps_per_epoch, train.epochs)

        # the same initial weights and noise seed on every rank: each micro-batch's dropout /
        # stochastic-depth masks are keyed by its global number (the rng_step counter), so ranks
        # draw different masks, and the very masks one process with accumulation would draw
        self.net = build_model(cfg.model, seed=cfg.seed)
        log.info("model %s", model_summary(self.net, cfg.data.train_size))
        if cpu_kernels_wanted(cfg.hardware):
            log.info("CPU kernels (hardware.cpu_kernels): %s", use_cpu_kernels(self.net))
        if cfg.model.pretrained and not cfg.resume:
            self._load_pretrained(cfg.model.pretrained)
        if cfg.hardware.sync_bn and self.ranks.distributed:
            log.info("SyncBatchNorm over %d devices in %d layers", self.world_size, convert_to_sync_bn(self.net))
        amp_level = cfg.hardware.amp_level
        forward_net = apply_amp(self.net, amp_level, run_dir)
        self.device_normalise = self._device_normalise()
        if self.device_normalise:
            forward_net = DeviceNormalise(forward_net, list(cfg.data.mean), list(cfg.data.std))
        self.ema = None
        if train.ema.enabled:
            shadow = build_model(cfg.model, seed=cfg.seed)
            if cpu_kernels_wanted(cfg.hardware):
                use_cpu_kernels(shadow)
            self.ema = EMA(self.net, shadow, train.ema.decay, train.ema.warmup)
        optimizer = build_optimizer(cfg.optimizer, self.net.trainable_params(), self.lrs)
        self.step = TrainStep(
            self.net,
            forward_net,
            SoftTargetCrossEntropy(),
            optimizer,
            clip_grad_norm=train.clip_grad_norm,
            loss_scale=train.loss_scale,
            accumulation_steps=self.accumulation,
            noise_stride=self.world_size,
            ema=self.ema,
            grad_reducer=nn.DistributedGradReducer(optimizer.parameters, mean=True, degree=self.world_size)
            if self.ranks.distributed
            else None,
        )
        self.shadow_net = self.ema.shadow_net if self.ema else None
        self.stage: Stage | None = None  # set by _enter_stage at the first epoch
        self.stage_data = cfg.data
        self.mixer = BatchMixer(cfg.data.augment, cfg.seed)
        self.progress = Progress()
        self.folder = RunFolder(run_dir, self._identity(), writer=self.main)
        self.loggers = build_loggers(cfg, run_dir, writer=self.main)
        self.stop = StopRequests()
        if len(self.schedule) > 1:
            log.info(
                "progressive learning (%s, formula %s), %d stages:\n%s",
                cfg.progressive.name, cfg.progressive.formula.name, len(self.schedule),
                format_schedule(self.schedule, cfg.data.augment.randaug_layers > 0),
            )  # fmt: skip
        log.info(
            "training %d epochs x %d steps (batch %s), %s lr %.3g (%.3g per 256 images), amp %s, "
            "loss scale %s, EMA %s; %d train / %d val images, %d trained and %d dropped per epoch",
            train.epochs, self.steps_per_epoch, self.plan.describe(), cfg.optimizer.name, base_lr, cfg.optimizer.lr,
            amp_level, train.loss_scale.kind.name, f"{train.ema.decay}" if self.ema else "off",
            self.split.num_images, self.val_data.split.num_images,
            self.steps_per_epoch * self.global_batch, self.plan.dropped(self.split.num_images),
        )  # fmt: skip

    def _device_normalise(self) -> bool:
        """data.normalise_on_device, where every stage's augmentation allows it (logged either way)."""
        if not self.cfg.data.normalise_on_device:
            return False
        blockers = {device_normalise_blocker(stage_data_config(self.cfg.data, stage)) for stage in self.schedule}
        blockers.discard(None)
        if blockers:
            log.info("training images normalised on the host: %s", "; ".join(sorted(blockers)))
            return False
        log.info("training images handed to the step as uint8 and normalised there (data.normalise_on_device)")
        return True

    def _load_pretrained(self, path: str) -> None:
        meta = load_pretrained(self.net, path)
        log.info("pretrained weights (%s) from %s", meta["weights"], path)
        if meta["reinitialised_classifier"]:
            log.info(
                "classifier re-initialised: the checkpoint has %d classes, this model %d",
                meta["source_classes"], self.net.num_classes,
            )  # fmt: skip

    def _enter_stage(self, epoch: int) -> None:
        """Switch data pipeline, dropout and mixing to the stage of ``epoch`` when it changes.
        Compiled graphs are cached per input shape, so only a new image size compiles."""
        stage = stage_of(self.schedule, epoch)
        if stage == self.stage:
            return
        self.stage = stage
        self.net.dropout.set_rate(stage.dropout)
        self.stage_data = stage_data_config(self.cfg.data, stage)
        self.mixer = BatchMixer(self.stage_data.augment, self.cfg.seed)
        if len(self.schedule) > 1:
            log.info(
                "stage %d/%d (epochs %d-%d): image size %d, dropout %.3f, RandAugment magnitude %s, "
                "mixup %.3f, cutmix %.3f",
                stage.index + 1, len(self.schedule), stage.first_epoch, stage.last_epoch, stage.image_size,
                stage.dropout, f"{stage.randaug:.2f}" if self.cfg.data.augment.randaug_layers > 0 else "off",
                stage.mixup, stage.cutmix,
            )  # fmt: skip

    # ---- checkpoints (layout and metadata: effv2.training.run_folder) -------------------
    def _identity(self) -> dict[str, Any]:
        return {
            "variant": self.cfg.model.name,
            "num_classes": self.cfg.model.num_classes,
            "class_names": list(self.split.class_names),
            "train_images": self.split.num_images,
            "train_fingerprint": self.split.fingerprint,
            "eval_size": self.cfg.data.eval_size,
            "schedule": [stage.as_row() for stage in self.schedule],
            "plan": {
                "batch_size": self.plan.batch_size,
                "world_size": self.world_size,
                "accumulation": self.accumulation,
                "global_batch": self.global_batch,
            },
        }

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
        if meta.get("variant") != self.cfg.model.name or meta.get("num_classes") != self.cfg.model.num_classes:
            raise UserError(
                f"resume={str(path)!r} is a {meta.get('variant')}/{meta.get('num_classes')} classes run; "
                f"this config trains {self.cfg.model.name}/{self.cfg.model.num_classes} classes"
            )
        if meta.get("schedule") != [stage.as_row() for stage in self.schedule]:
            log.warning("resume: the progressive schedule differs from the one %s was trained with", path)
        self._check_resumable_plan(path, meta)
        self._check_same_data(path, meta)
        progress = Progress.from_meta(meta)
        if progress.evaluated:
            progress.next_epoch()
        elif not self.main:  # the epoch's losses and bad images so far are over all ranks: count them once
            progress.loss_sum, progress.loss_count, progress.bad_images = 0.0, 0, 0
        self.progress = progress
        log.info("resumed from %s at epoch %d, %d steps done", path, progress.epoch, progress.steps_done)
        self.folder.adopt(path, progress)
        global_step = (progress.epoch - 1) * self.steps_per_epoch + progress.steps_done
        self.loggers.adopt(ResumePoint(path.parent.parent, progress.epoch, global_step, meta.get("loggers", {})))

    def _check_same_data(self, path: Path, meta: dict[str, Any]) -> None:
        """The epoch order is a permutation of the split's indices: another split (images added or
        removed, a pack that left images out) continues training, but not the original order."""
        images, fingerprint = meta.get("train_images"), meta.get("train_fingerprint")
        if images is not None and images != self.split.num_images:
            log.warning(
                "resume: %s trained on %d images, the training split now holds %d: the epoch order and "
                "the step count differ from the original run's from here on", path, images, self.split.num_images,
            )  # fmt: skip
        elif fingerprint and fingerprint != self.split.fingerprint:
            log.warning("resume: the training split's listing (names or sizes) changed since %s was written", path)

    def _check_resumable_plan(self, path: Path, meta: dict[str, Any]) -> None:
        """A run continues on any device count whose global batch is the same: the epoch is cut
        into the same optimizer steps. Another global batch would change the data order and the
        schedule, so it is refused."""
        before = meta.get("plan")
        if before is None:
            raise UserError(
                f"resume={str(path)!r} was written by an older effv2 without the batch plan and cannot be resumed; "
                f"start from its weights with model.pretrained={path}"
            )
        if before["global_batch"] != self.global_batch:
            raise UserError(
                f"resume={str(path)!r} trained with a global batch of {before['global_batch']} "
                f"({before['batch_size']} x {before['world_size']} devices x {before['accumulation']} accumulation); "
                f"this run's is {self.plan.describe()}: set data.batch_size and train.accumulation_steps so that "
                f"batch x devices x accumulation = {before['global_batch']}"
            )
        if (before["world_size"], before["accumulation"]) != (self.world_size, self.accumulation):
            log.info(
                "resume: %d devices x %d accumulation continue a run of %d x %d, same global batch %d",
                self.world_size, self.accumulation, before["world_size"], before["accumulation"], self.global_batch,
            )  # fmt: skip
        if before["batch_size"] != self.plan.batch_size:
            log.warning(
                "resume: micro-batches of %d images instead of %d: same steps and data order, but other BN batch "
                "statistics and dropout masks than the original run", self.plan.batch_size, before["batch_size"],
            )  # fmt: skip

    # ---- the loop ----------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        progress = self.progress
        self._enter_stage(epoch)
        stage = self.stage
        batch, rank = cfg.data.batch_size, self.ranks.rank
        indices = self.plan.rank_indices(epoch_order(self.split.num_images, cfg.seed, epoch), rank)
        first_micro = progress.steps_done * self.accumulation  # this rank's, within the epoch
        remaining = indices[first_micro * batch :]
        # the counter that keys dropout / drop-path masks: the global number of the micro-batch
        # about to run; the step adds world_size after each micro-batch
        run_micro = (epoch - 1) * self.micro_per_epoch + first_micro
        self.net.rng_step.set_data(Tensor(np.array([self.plan.global_micro(run_micro, rank)], np.int64)))
        started = time.perf_counter()
        waited = 0.0
        steps_at_start = progress.steps_done
        if len(remaining):
            record_to = None
            if cfg.data.record_reads:
                (self.run_dir / "reads").mkdir(exist_ok=True)
                record_to = self.run_dir / "reads" / f"epoch{epoch:04d}_rank{rank}.txt"
            dataset = train_epoch(
                self.stage_data,
                self.split,
                remaining,
                self.workers,
                stage.image_size,
                record_to,
                cfg.seed,
                epoch,
                uint8_out=self.device_normalise,
            )
            bar = tqdm(total=self.micro_per_epoch, initial=first_micro, desc=f"epoch {epoch}", disable=None)
            interval = cfg.train.checkpoint.recovery_interval
            ready = time.perf_counter()
            for micro, (images, labels, replaced) in enumerate(
                dataset.create_tuple_iterator(num_epochs=1, output_numpy=True), start=first_micro
            ):
                waited += time.perf_counter() - ready  # the step waited this long for its batch
                progress.bad_images += self.bad_images.report(replaced[:, 0], replaced[:, 1])
                global_micro = self.plan.global_micro((epoch - 1) * self.micro_per_epoch + micro, rank)
                targets = smoothed_one_hot(labels, cfg.model.num_classes, cfg.train.label_smoothing)
                images, targets = self.mixer(images, targets, global_micro)
                apply = (micro + 1) % self.accumulation == 0
                if micro > first_micro:  # not before the first step: its compile may take long
                    ranks.heartbeat(self.run_dir)
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
                        self._stop_on_divergence(epoch, loss)
                elif not math.isfinite(loss):
                    self._stop_on_divergence(epoch, loss)
                if math.isfinite(loss):
                    progress.loss_sum += loss
                    progress.loss_count += 1
                step_index = (epoch - 1) * self.steps_per_epoch + micro // self.accumulation
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
            bar.close()
        seconds = time.perf_counter() - started
        trained = (progress.steps_done - steps_at_start) * self.global_batch  # over all ranks
        loss_sum, loss_count, substituted = self._epoch_loss()
        return {
            "epoch": epoch,
            "stage": stage.index,
            "image_size": stage.image_size,
            "lr": float(self.lrs[epoch * self.steps_per_epoch - 1]),
            "train_loss": loss_sum / loss_count if loss_count else "",
            "images_per_s": trained / seconds if trained else "",
            "overflow_steps": progress.overflow_steps,
            "loss_scale": float(self.step.scale.asnumpy()[0]),
            "seconds": seconds,
            "data_wait": waited / seconds if trained else "",
            "train_images": self.steps_per_epoch * self.global_batch,
            "dropped_images": self.plan.dropped(self.split.num_images),
            "bad_images": substituted,
        }

    def _interrupt(self, epoch: int, steps_done: int) -> None:
        self._save_state(RECOVERY)
        number = self.stop.signal_number
        requeued = self.main and not self.ranks.distributed and slurm.requeue_after(number)
        then = "SLURM runs it again from there" if requeued else f"continue with resume={self.run_dir}"
        raise Interrupted(
            f"{signal.Signals(number).name} received: stopped after step {steps_done} (epoch {epoch}) and wrote "
            f"{self.folder.ckpt_dir / RECOVERY}; {then}",
            number,
        )

    def _stop_on_divergence(self, epoch: int, loss: float) -> None:
        step = (epoch - 1) * self.steps_per_epoch + self.progress.steps_done + 1
        last_good = self.folder.ckpt_dir / LAST
        where = f"the last good checkpoint is {last_good}" if last_good.exists() else "no checkpoint was written yet"
        raise UserError(
            f"training loss became {loss} at step {step} (epoch {epoch}); {where}. "
            "Lower optimizer.lr, set train.clip_grad_norm, or use train.loss_scale.kind=dynamic"
        )

    def _evaluate(self) -> dict[str, float]:
        self._sync_ranks()
        val = evaluate(self.net, self.val_data, self.run_dir)
        metrics = {"val_top1": val["top1"], "val_top5": val["top5"]}
        if self.shadow_net is not None:
            ema_val = evaluate(self.shadow_net, self.val_data, self.run_dir)
            metrics.update(ema_val_top1=ema_val["top1"], ema_val_top5=ema_val["top5"])
        return metrics

    def fit(self) -> TrainResult:
        cfg = self.cfg
        epochs = cfg.train.epochs
        best_key = cfg.train.checkpoint.best_metric.name
        if best_key.startswith("ema_") and self.ema is None:
            raise UserError(f"train.checkpoint.best_metric={best_key} needs train.ema.enabled=true")
        metrics: dict[str, float] = {}
        for epoch in range(self.progress.epoch, epochs + 1):
            self.progress.epoch = epoch
            self.step.set_train(True)
            row = self._train_epoch(epoch)
            if epoch % cfg.train.eval_interval == 0 or epoch == epochs:
                metrics = self._evaluate()
                row.update(metrics)
                if metrics[best_key] > self.progress.best:
                    self.progress.best = metrics[best_key]
                    self._save_model(BEST, metrics)
                self.folder.keep_top_k(
                    cfg.train.checkpoint.keep_top_k, self.progress, metrics[best_key], epoch,
                    functools.partial(self._save_model, metrics=metrics),
                )  # fmt: skip
            self.progress.evaluated = True
            self.loggers.log_epoch(epoch * self.steps_per_epoch, row)
            self._save_state(LAST, metrics)
            self.folder.finish_epoch()
            log.info(
                "epoch %d/%d  loss %s  lr %.3g  %s%s img/s  %.1f s  (%s of it waiting for data)  "
                "%d images trained over %d ranks, %d dropped as the remainder%s",
                epoch, epochs, _fmt(row["train_loss"], ".4f"), row["lr"],
                "".join(f"{k} {row[k]:.2f}  " for k in ("val_top1", "val_top5", "ema_val_top1") if k in row),
                _fmt(row["images_per_s"], ".1f"), row["seconds"],
                f"{row['data_wait']:.0%}" if isinstance(row["data_wait"], float) else "-",
                row["train_images"], self.world_size, row["dropped_images"],
                f", {row['bad_images']} bad images replaced by substitutes" if row["bad_images"] else "",
            )  # fmt: skip
            self.progress.next_epoch()
        final = {**metrics, "best_" + best_key: self.progress.best, "epochs": epochs}
        final["overflow_steps"] = self.progress.overflow_steps
        if self.main:
            write_json(self.run_dir / "metrics.json", final)
        if self.ranks.distributed:
            ranks.write_rank_status(self.run_dir, weights=ranks.weights_digest(self.net))
        return TrainResult(best=self.progress.best, final=final)


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, float) else "-"


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
