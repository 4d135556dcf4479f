"""The training log's lines: the run's plan, each stage as it starts, each epoch as it ends."""

from __future__ import annotations

from typing import Any

from effv2.config.schema import RunConfig
from effv2.data.sharding import BatchPlan
from effv2.progressive import Stage, format_schedule


def schedule_lines(cfg: RunConfig, schedule: list[Stage]) -> str:
    return (
        f"progressive learning ({cfg.progressive.name}, formula {cfg.progressive.formula.name}), {len(schedule)} "
        f"stages:\n{format_schedule(schedule, cfg.data.augment.randaug_layers > 0)}"
    )


def plan_line(
    cfg: RunConfig, plan: BatchPlan, steps_per_epoch: int, base_lr: float, train_images: int, val_images: int
) -> str:
    train = cfg.train
    return (
        f"training {train.epochs} epochs x {steps_per_epoch} steps (batch {plan.describe()}), {cfg.optimizer.name} "
        f"lr {base_lr:.3g} ({cfg.optimizer.lr:.3g} per 256 images), amp {cfg.hardware.amp_level}, loss scale "
        f"{train.loss_scale.kind.name}, EMA {train.ema.decay if train.ema.enabled else 'off'}; {train_images} train "
        f"/ {val_images} val images, {steps_per_epoch * plan.global_batch} trained and "
        f"{plan.dropped(train_images)} dropped per epoch"
    )


def stage_line(stage: Stage, stages: int, randaug_on: bool) -> str:
    return (
        f"stage {stage.index + 1}/{stages} (epochs {stage.first_epoch}-{stage.last_epoch}): image size "
        f"{stage.image_size}, dropout {stage.dropout:.3f}, RandAugment magnitude "
        f"{f'{stage.randaug:.2f}' if randaug_on else 'off'}, mixup {stage.mixup:.3f}, cutmix {stage.cutmix:.3f}"
    )


def epoch_line(row: dict[str, Any], epochs: int, world_size: int) -> str:
    """One epoch's row of metrics.csv as the log shows it."""
    scores = "".join(f"{key} {row[key]:.2f}  " for key in ("val_top1", "val_top5", "ema_val_top1") if key in row)
    waiting = f"{row['data_wait']:.0%}" if isinstance(row["data_wait"], float) else "-"
    bad = f", {row['bad_images']} bad images replaced by substitutes" if row["bad_images"] else ""
    return (
        f"epoch {row['epoch']}/{epochs}  loss {_fmt(row['train_loss'], '.4f')}  lr {row['lr']:.3g}  {scores}"
        f"{_fmt(row['images_per_s'], '.1f')} img/s  {row['seconds']:.1f} s  ({waiting} of it waiting for data)  "
        f"{row['train_images']} images trained over {world_size} ranks, {row['dropped_images']} dropped as the "
        f"remainder{bad}"
    )


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, float) else "-"
