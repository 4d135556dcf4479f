"""Progressive learning: the per-stage schedule of image size and regularisation.

The trainer asks :func:`build_schedule` once; every step then belongs to exactly one stage and
trains at that stage's values. With ``train.step_counting=whole_epochs`` stage k covers epochs
int(k / M * E) + 1 .. int((k + 1) / M * E), the released code's split in epochs; with
``official`` it covers steps int(k / M * T) .. int((k + 1) / M * T) - 1 of the T steps, as
google/automl ``efficientnetv2/main.py`` does (``max_steps = int(ratio * train_steps)``), so a
stage may switch inside an epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from effv2.config.schema import REGULARISERS, RunConfig
from effv2.models.variants import resolved_drop_rate
from effv2.step_plan import StepPlan


@dataclass(frozen=True)
class Stage:
    """One stage's steps, image size and regulariser strengths (``strengths``: one value per
    entry of effv2.config.schema.REGULARISERS, each ramped between progressive.<name>_min and
    _max or fixed)."""

    index: int  # 0-based
    first_step: int  # 0-based, inclusive
    end_step: int  # exclusive
    first_epoch: int  # 1-based, inclusive: the epochs its steps belong to
    last_epoch: int
    image_size: int
    strengths: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, regulariser: str) -> float:
        return self.strengths[regulariser]

    def as_row(self) -> dict[str, Any]:
        row = {key: getattr(self, key) for key in ("index", "first_step", "end_step", "first_epoch", "last_epoch")}
        return {**row, "image_size": self.image_size, **self.strengths}


def _ramp(low: float, high: float, index: int, stages: int) -> float:
    return low + (high - low) * index / (stages - 1)


def _fixed_values(cfg: RunConfig) -> dict[str, float]:
    values = {name: OmegaConf.select(cfg, regulariser.fixed) for name, regulariser in REGULARISERS.items()}
    values["dropout"] = resolved_drop_rate(cfg.model)  # null: the variant's own rate
    return {name: float(value) for name, value in values.items()}


def build_schedule(cfg: RunConfig, steps: StepPlan) -> list[Stage]:
    """The stages of this run; one stage at the fixed values when progressive learning is off.
    The progressive values are those effv2.config.validate accepted."""
    prog = cfg.progressive
    fixed = _fixed_values(cfg)
    if prog.stages == 1:
        return [Stage(0, 0, steps.total_steps, 1, steps.epochs, int(cfg.data.train_size), fixed)]
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
        if steps.continuous:
            first = int(k / prog.stages * steps.total_steps)
            end = int((k + 1) / prog.stages * steps.total_steps)
        else:
            first = steps.epoch_start(int(k / prog.stages * steps.epochs) + 1)
            end = steps.epoch_end(int((k + 1) / prog.stages * steps.epochs))
        stages.append(Stage(k, first, end, steps.epoch_of(first), steps.epoch_of(end - 1), size, values))
    return stages


def stage_of(schedule: list[Stage], step: int) -> Stage:
    """The stage that step ``step`` (0-based) trains in."""
    return next(stage for stage in schedule if stage.first_step <= step < stage.end_step)


def _strength(stage: Stage, name: str, randaug_on: bool) -> str:
    if name == "randaug" and not randaug_on:
        return "off"
    return f"{stage[name]:.{REGULARISERS[name].decimals}f}"


def stage_values(stage: Stage, randaug_on: bool) -> str:
    """The stage's image size and strengths as the stage log line names them."""
    named = [f"{REGULARISERS[name].label} {_strength(stage, name, randaug_on)}" for name in REGULARISERS]
    return ", ".join([f"image size {stage.image_size}", *named])


def format_schedule(schedule: list[Stage], randaug_on: bool) -> str:
    """The schedule as a table: a row per stage, a column per regulariser."""
    widths = {name: max(len(name), 6) for name in REGULARISERS}
    header = f"{'stage':>5} {'epochs':>9} {'steps':>13} {'size':>5} " + " ".join(
        f"{name:>{widths[name]}}" for name in REGULARISERS
    )
    lines = [header]
    for s in schedule:
        epochs, steps = f"{s.first_epoch}-{s.last_epoch}", f"{s.first_step}-{s.end_step - 1}"
        values = " ".join(f"{_strength(s, name, randaug_on):>{widths[name]}}" for name in REGULARISERS)
        lines.append(f"{s.index:>5} {epochs:>9} {steps:>13} {s.image_size:>5} {values}")
    return "\n".join(lines)
