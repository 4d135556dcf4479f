"""The training log's lines: the run's plan, each stage as it starts, each epoch as it ends."""

from __future__ import annotations

from typing import Any

from effv2.config.schema import RunConfig
from effv2.data.sharding import BatchPlan
from effv2.progressive import Stage, format_schedule, stage_values
from effv2.step_plan import StepPlan


def schedule_lines(cfg: RunConfig, schedule: list[Stage]) -> str:
    return (
        f"progressive learning ({cfg.progressive.name}, formula {cfg.progressive.formula.name}), {len(schedule)} "
        f"stages:\n{format_schedule(schedule, cfg.data.augment.randaug_layers > 0)}"
    )


def plan_line(cfg: RunConfig, plan: BatchPlan, steps: StepPlan, base_lr: float, val_images: int) -> str:
    train = cfg.train
    if steps.continuous:
        per_epoch = f"{steps.total_steps} steps, {steps.describe()}"
        images = "none dropped"
    else:
        per_epoch = f"x {int(steps.steps_per_epoch)} steps"
        trained = int(steps.steps_per_epoch) * plan.global_batch
        images = f"{trained} trained and {steps.dropped_per_epoch()} dropped per epoch"
    return (
        f"training {steps.epochs} epochs {per_epoch} (batch {plan.describe()}), {cfg.optimizer.name} "
        f"lr {base_lr:.3g} ({cfg.optimizer.lr:.3g} per 256 images), amp {cfg.hardware.amp_level}, loss scale "
        f"{train.loss_scale.kind.name}, EMA {train.ema.decay if train.ema.enabled else 'off'}; {steps.num_images} "
        f"train / {val_images} val images, {images}"
    )


def stage_line(stage: Stage, stages: int, randaug_on: bool, steps: StepPlan) -> str:
    span = f"epochs {stage.first_epoch}-{stage.last_epoch}"
    if steps.continuous:  # stages switch at steps, possibly inside an epoch
        span = f"steps {stage.first_step}-{stage.end_step - 1}, in {span}"
    return f"stage {stage.index + 1}/{stages} ({span}): {stage_values(stage, randaug_on)}"


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
