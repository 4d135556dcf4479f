"""What a run trains with, set up before its first step: the seeds, the splits and the batch
plan checked against them, the network (effv2's CPU kernels
decided once, for it and its EMA shadow), pretrained weights, SyncBN, mixed precision, where the
images are normalised, the EMA, the optimizer and the compiled step."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
from mindspore import nn

from effv2.config.schema import DataConfig, RunConfig
from effv2.conversion.seed import load_pretrained_weights
from effv2.data.bad_images import BadImageLog
from effv2.data.pipeline import LoadedSplit, build_eval_split, open_train_split
from effv2.data.sharding import BatchPlan
from effv2.data.split import ImageSplit
from effv2.data.transforms import device_normalise_blocker
from effv2.errors import UserError
from effv2.kernels import cpu_kernels_wanted, kernels_off_reason
from effv2.launch import ranks
from effv2.models import build_model, model_summary
from effv2.models.blocks import convert_to_sync_bn
from effv2.models.cpu_kernels import use_cpu_kernels
from effv2.progressive import Stage
from effv2.training.ema import EMA
from effv2.training.loss import SoftTargetCrossEntropy
from effv2.training.optim import build_optimizer
from effv2.training.precision import apply_amp
from effv2.training.rmsprop_tf import use_fused_update
from effv2.training.step import DeviceNormalise, TrainStep

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    ms.set_seed(seed)
    ds.config.set_seed(seed)
    np.random.seed(seed)


@dataclass
class RunData:
    split: ImageSplit  # the training split
    val_data: LoadedSplit  # this rank's share of the validation split, ready to evaluate
    bad_images: BadImageLog
    plan: BatchPlan


def open_data(cfg: RunConfig, run_dir: Path, rank_info: ranks.RankInfo) -> RunData:
    """The run's splits (a launched rank reads the manifests its node pinned in the run folder)
    and its batch plan, checked against them."""
    pinned_in = run_dir if rank_info.distributed else None
    node = rank_info.rank // cfg.hardware.devices_per_node
    split = open_train_split(cfg.data, pinned_in, node)
    bad_images = BadImageLog(split, cfg.data.on_bad_image.value, "training")
    val_data = build_eval_split(
        cfg.data, cfg.hardware.num_workers, shard=(rank_info.rank, rank_info.world_size), run_dir=pinned_in, node=node
    )
    if split.class_names != val_data.split.class_names:
        raise UserError(
            f"train and val class folders differ under {split.path.parent}: "
            f"{len(split.class_names)} vs {len(val_data.split.class_names)} classes"
        )
    plan = BatchPlan(cfg.data.batch_size, rank_info.world_size, cfg.train.accumulation_steps)
    if plan.steps_per_epoch(split.num_images) == 0:
        raise UserError(
            f"data.batch_size={plan.describe()} (the global batch: batch x devices x "
            f"train.accumulation_steps) exceeds the {split.num_images} training images; lower them"
        )
    return RunData(split, val_data, bad_images, plan)


@dataclass
class Built:
    net: nn.Cell
    ema: EMA | None
    step: TrainStep
    device_normalise: bool  # the step takes uint8 images and normalises them itself

    @property
    def shadow_net(self) -> nn.Cell | None:
        return self.ema.shadow_net if self.ema else None


def build(
    cfg: RunConfig, run_dir: Path, schedule: list[Stage], lrs: np.ndarray, world_size: int, distributed: bool
) -> Built:
    """The network and its compiled step. The same initial weights and noise seed on every rank:
    each micro-batch's dropout / stochastic-depth masks are keyed by its global number (the
    rng_step counter), so ranks draw different masks, the very masks one process with
    accumulation would draw."""
    train = cfg.train
    kernels = cpu_kernels_wanted(cfg.hardware)
    net = build_model(cfg.model, seed=cfg.seed)
    log.info("model %s", model_summary(net, cfg.data.train_size))
    if kernels:
        log.info("CPU kernels (hardware.cpu_kernels): %s", use_cpu_kernels(net))
    elif cfg.hardware.device_target.name == "CPU":
        log.info("CPU kernels off: %s", kernels_off_reason(cfg.hardware))
    if cfg.model.pretrained and not cfg.resume:
        _load_pretrained(net, cfg.model.pretrained)
    if cfg.hardware.sync_bn and distributed:
        log.info("SyncBatchNorm over %d devices in %d layers", world_size, convert_to_sync_bn(net))
    forward_net = apply_amp(net, cfg.hardware.amp_level, run_dir)
    device_normalise = _normalise_on_device(cfg.data, schedule)
    if device_normalise:
        forward_net = DeviceNormalise(forward_net, list(cfg.data.mean), list(cfg.data.std))
    ema = None
    if train.ema.enabled:
        shadow = build_model(cfg.model, seed=cfg.seed)
        if kernels:
            use_cpu_kernels(shadow)
        ema = EMA(net, shadow, train.ema.decay, train.ema.warmup)
    optimizer = build_optimizer(cfg.optimizer, net.trainable_params(), lrs)
    if kernels:
        log.info("CPU kernels (hardware.cpu_kernels), optimizer: %s", use_fused_update(optimizer))
    reducer = nn.DistributedGradReducer(optimizer.parameters, mean=True, degree=world_size) if distributed else None
    step = TrainStep(
        net, forward_net, SoftTargetCrossEntropy(), optimizer, clip_grad_norm=train.clip_grad_norm,
        loss_scale=train.loss_scale, accumulation_steps=train.accumulation_steps, noise_stride=world_size, ema=ema,
        grad_reducer=reducer,
    )  # fmt: skip
    return Built(net, ema, step, device_normalise)


def _normalise_on_device(data: DataConfig, schedule: list[Stage]) -> bool:
    """data.normalise_on_device, where every stage's augmentation allows it (logged either way)."""
    if not data.normalise_on_device:
        return False
    blockers = {device_normalise_blocker(data, stage) for stage in schedule}
    blockers.discard(None)
    if blockers:
        log.info("training images normalised on the host: %s", "; ".join(sorted(blockers)))
        return False
    log.info("training images handed to the step as uint8 and normalised there (data.normalise_on_device)")
    return True


def _load_pretrained(net: nn.Cell, path: str) -> None:
    meta = load_pretrained_weights(net, path)
    log.info("pretrained weights (%s) from %s", meta["weights"], path)
    if meta["reinitialised_classifier"]:
        log.info(
            "classifier re-initialised: the checkpoint has %d classes, this model %d",
            meta["source_classes"], net.num_classes,
        )  # fmt: skip
