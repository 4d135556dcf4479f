"""Progressive learning: the per-stage schedule of image size and regularisation.

The trainer asks :func:`build_schedule` once; every epoch then belongs to exactly one stage
and trains at that stage's values. Stage k covers epochs int(k / M * E) + 1 .. int((k + 1) / M * E),
the split of the released code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from effv2.config.schema import REGULARISERS, RunConfig
from effv2.models.variants import resolved_drop_rate


@dataclass(frozen=True)
class Stage:
    """One stage's epochs, image size and regulariser strengths (effv2.config.schema.REGULARISERS,
    each ramped between progressive.<name>_min and _max)."""

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


def _fixed_values(cfg: RunConfig) -> dict[str, float]:
    augment = cfg.data.augment
    return {
        "dropout": resolved_drop_rate(cfg.model),
        "randaug": float(augment.randaug_magnitude),
        "mixup": float(augment.mixup_alpha),
        "cutmix": float(augment.cutmix_alpha),
    }


def build_schedule(cfg: RunConfig) -> list[Stage]:
    """The stages of this run; one stage at the fixed values when progressive learning is off.
    The progressive values are those effv2.config.validate accepted."""
    prog, epochs = cfg.progressive, cfg.train.epochs
    fixed = _fixed_values(cfg)
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


def format_schedule(schedule: list[Stage], randaug_on: bool) -> str:
    header = f"{'stage':>5} {'epochs':>9} {'size':>5} {'dropout':>8} {'randaug':>8} {'mixup':>6} {'cutmix':>7}"
    lines = [header]
    for s in schedule:
        epochs = f"{s.first_epoch}-{s.last_epoch}"
        randaug = f"{s.randaug:.2f}" if randaug_on else "off"
        values = f"{s.dropout:>8.3f} {randaug:>8} {s.mixup:>6.3f} {s.cutmix:>7.3f}"
        lines.append(f"{s.index:>5} {epochs:>9} {s.image_size:>5} {values}")
    return "\n".join(lines)
