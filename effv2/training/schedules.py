"""Per-step learning rates, following the official EfficientNetV2 schedule semantics.

The decay curve is a function of the global step from 0 (as in google/automl's
``WarmupLearningRateSchedule``); during the first ``warmup_epochs`` a linear ramp from
``warmup_lr`` to the base rate replaces it.

- constant:     lr = base
- cosine:       lr = min_lr + (base - min_lr) * (1 + cos(pi * step / total_steps)) / 2
- exponential:  lr = base * decay_rate ** floor(step / (decay_epochs * steps_per_epoch))
- multistep:    lr = base * gamma ** (number of milestones <= step / steps_per_epoch)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from effv2.config.schema import SchedulerConfig
from effv2.errors import UserError


def _multistep(
    cfg: SchedulerConfig, base_lr: float, step: np.ndarray, steps_per_epoch: float, total: float
) -> np.ndarray:
    epoch = step / steps_per_epoch
    passed = (epoch[:, None] >= np.asarray(list(cfg.milestones), dtype=np.float64)[None, :]).sum(axis=1)
    return base_lr * cfg.gamma**passed


# scheduler.name -> (the option's config, base lr, step numbers, steps per epoch, total steps) -> lr
DECAYS: dict[str, Callable[..., np.ndarray]] = {
    "constant": lambda cfg, base_lr, step, steps_per_epoch, total: np.full(step.shape, base_lr),
    "cosine": lambda cfg, base_lr, step, steps_per_epoch, total: (
        cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1.0 + np.cos(math.pi * step / total))
    ),
    "exponential": lambda cfg, base_lr, step, steps_per_epoch, total: (
        base_lr * cfg.decay_rate ** np.floor(step / (cfg.decay_epochs * steps_per_epoch))
    ),
    "multistep": _multistep,
}


def _decayed(
    cfg: SchedulerConfig, base_lr: float, step: np.ndarray, steps_per_epoch: float, total: float
) -> np.ndarray:
    if cfg.name not in DECAYS:
        raise UserError(f"scheduler.name={cfg.name!r} is unknown; accepted: {', '.join(DECAYS)}")
    return DECAYS[cfg.name](cfg, base_lr, step, steps_per_epoch, total)


def learning_rates(
    cfg: SchedulerConfig, base_lr: float, steps_per_epoch: float, total_steps: int, decay_steps: float | None = None
) -> np.ndarray:
    """The learning rate of each of the run's ``total_steps`` optimizer steps, as float32.
    ``steps_per_epoch`` may be fractional (train.step_counting=official); ``decay_steps``: the
    steps a cosine spans (default ``total_steps``; officially model_fn's float train_steps)."""
    step = np.arange(total_steps, dtype=np.float64)
    lrs = _decayed(cfg, base_lr, step, steps_per_epoch, total_steps if decay_steps is None else decay_steps)
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)  # truncated, as utils.py does
    if warmup_steps > 0:
        ramp = cfg.warmup_lr + (base_lr - cfg.warmup_lr) * step / warmup_steps
        lrs = np.where(step < warmup_steps, ramp, lrs)
    return lrs.astype(np.float32)
