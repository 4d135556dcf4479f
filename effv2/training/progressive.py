"""Progressive learning: the per-stage schedule of image size and regularisation.

The trainer asks :func:`build_schedule` once; every epoch then belongs to exactly one stage
and trains at that stage's values. Stage k covers epochs int(k / M * E) + 1 .. int((k + 1) / M * E),
the split of the released code.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import OmegaConf

from effv2.config.schema import DataConfig, RunConfig
from effv2.errors import UserError

# each ramps between progressive.<name>_min and progressive.<name>_max
REGULARISERS = ("dropout", "randaug", "mixup", "cutmix")


@dataclass(frozen=True)
class Stage:
    index: int  # 0-based
    first_epoch: int  # 1-based, inclusive
    last_epoch: int
    image_size: int
    dropout: float
    randaug: float  # the official level scale; fractional, like the released code's np.linspace
    mixup: float
    cutmix: float

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def _ramp(low: float, high: float, index: int, stages: int) -> float:
    return low + (high - low) * index / (stages - 1)


def _fixed_values(cfg: RunConfig, default_dropout: float) -> dict[str, float]:
    augment = cfg.data.augment
    return {
        "dropout": default_dropout if cfg.model.drop_rate is None else float(cfg.model.drop_rate),
        "randaug": float(augment.randaug_magnitude),
        "mixup": float(augment.mixup_alpha),
        "cutmix": float(augment.cutmix_alpha),
    }


def _check(cfg: RunConfig) -> None:
    prog = cfg.progressive
    epochs = cfg.train.epochs
    if prog.stages < 1:
        raise UserError(f"progressive.stages={prog.stages} must be a positive integer (1 turns it off)")
    if prog.stages > epochs:
        raise UserError(f"progressive.stages={prog.stages} needs at least as many epochs; train.epochs={epochs}")
    if prog.stages == 1:
        ramps = [
            f"{name}_{end}" for name in REGULARISERS for end in ("min", "max") if prog[f"{name}_{end}"] is not None
        ]
        if prog.max_size != cfg.data.train_size:
            ramps.insert(0, "max_size")
        if ramps:
            raise UserError(
                f"progressive.{ramps[0]}={prog[ramps[0]]} has no effect with progressive.stages=1 "
                "(progressive=none); pick a schedule (progressive=paper|official_code|effnetv2_s|...) "
                "or set progressive.stages"
            )
        return
    if prog.min_size <= 0 or prog.max_size <= 0:
        raise UserError(f"progressive sizes must be positive: min_size={prog.min_size}, max_size={prog.max_size}")
    if prog.min_size > prog.max_size:
        raise UserError(
            f"progressive.min_size={prog.min_size} exceeds progressive.max_size={prog.max_size}; "
            "set progressive.min_size (the released code uses half the training size)"
        )
    for name in REGULARISERS:
        low, high = prog[f"{name}_min"], prog[f"{name}_max"]
        if (low is None) != (high is None):
            raise UserError(f"set both progressive.{name}_min and progressive.{name}_max, or neither ({low}, {high})")
        if low is None:
            continue
        bounds = {"dropout": (0.0, 1.0, False)}.get(name, (0.0, float("inf"), True))
        lowest, highest, closed = bounds
        for key, value in ((f"{name}_min", low), (f"{name}_max", high)):
            if not (lowest <= value <= highest if closed else lowest <= value < highest):
                accepted = f"[{lowest}, {highest}{']' if closed else ')'}"
                raise UserError(f"progressive.{key}={value} is outside {accepted}")
    if prog.randaug_min is not None and cfg.data.augment.randaug_layers <= 0:
        raise UserError(
            f"progressive.randaug_min/max ramp RandAugment, but data.augment.randaug_layers="
            f"{cfg.data.augment.randaug_layers}; set it (the official recipes use 2)"
        )


def build_schedule(cfg: RunConfig, default_dropout: float) -> list[Stage]:
    """The stages of this run; one stage at the fixed values when progressive learning is off.
    ``default_dropout`` is the variant's own head dropout, used when ``model.drop_rate`` is null."""
    _check(cfg)
    prog, epochs = cfg.progressive, cfg.train.epochs
    fixed = _fixed_values(cfg, default_dropout)
    if prog.stages == 1:
        return [Stage(0, 1, epochs, int(cfg.data.train_size), **fixed)]
    stages = []
    for k in range(prog.stages):
        if prog.formula.name == "official_code":
            size = int(prog.min_size + (prog.max_size - prog.min_size) * (k + 1) / prog.stages)
        else:
            size = int(_ramp(prog.min_size, prog.max_size, k, prog.stages))
        values = dict(fixed)
        for name in REGULARISERS:
            low, high = prog[f"{name}_min"], prog[f"{name}_max"]
            if low is not None:
                values[name] = _ramp(float(low), float(high), k, prog.stages)
        first, last = int(k / prog.stages * epochs) + 1, int((k + 1) / prog.stages * epochs)
        stages.append(Stage(k, first, last, size, **values))
    return stages


def stage_of(schedule: list[Stage], epoch: int) -> Stage:
    return next(stage for stage in schedule if stage.first_epoch <= epoch <= stage.last_epoch)


def stage_data_config(data_cfg: DataConfig, stage: Stage) -> DataConfig:
    """A copy of the ``data`` node with the stage's augmentation strengths."""
    stage_cfg = copy.deepcopy(data_cfg)
    if OmegaConf.is_config(stage_cfg):
        OmegaConf.set_readonly(stage_cfg, False)
    stage_cfg.augment.randaug_magnitude = stage.randaug
    stage_cfg.augment.mixup_alpha = stage.mixup
    stage_cfg.augment.cutmix_alpha = stage.cutmix
    return stage_cfg


def format_schedule(schedule: list[Stage], randaug_on: bool) -> str:
    header = f"{'stage':>5} {'epochs':>9} {'size':>5} {'dropout':>8} {'randaug':>8} {'mixup':>6} {'cutmix':>7}"
    lines = [header]
    for s in schedule:
        epochs = f"{s.first_epoch}-{s.last_epoch}"
        randaug = f"{s.randaug:.2f}" if randaug_on else "off"
        values = f"{s.dropout:>8.3f} {randaug:>8} {s.mixup:>6.3f} {s.cutmix:>7.3f}"
        lines.append(f"{s.index:>5} {epochs:>9} {s.image_size:>5} {values}")
    return "\n".join(lines)
