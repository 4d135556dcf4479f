"""Optimizers from the ``optimizer`` config group, with weight decay kept off BN and biases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from mindspore import Parameter, Tensor, nn

from effv2.config.schema import OptimizerConfig
from effv2.errors import UserError
from effv2.training.rmsprop_tf import TFRMSProp


def uses_weight_decay(param: Parameter) -> bool:
    """Convolution and dense kernels decay; BN gamma/beta and biases never do."""
    leaf = param.name.rsplit(".", 1)[-1]
    return len(param.shape) > 1 and leaf not in ("gamma", "beta", "bias")


def parameter_groups(params: list[Parameter], weight_decay: float) -> list[dict]:
    decay = [p for p in params if uses_weight_decay(p)]
    no_decay = [p for p in params if not uses_weight_decay(p)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def scaled_lr(cfg: OptimizerConfig, global_batch: int) -> float:
    """``optimizer.lr`` is given per 256 images."""
    return cfg.lr * global_batch / 256.0


# optimizer.name -> (parameter groups, per-step learning rates, the option's config) -> optimizer
OPTIMIZERS: dict[str, Callable[[list, Tensor, Any], nn.Optimizer]] = {
    "rmsprop": lambda groups, lr, cfg: TFRMSProp(
        groups, learning_rate=lr, decay=cfg.decay, momentum=cfg.momentum, epsilon=cfg.eps
    ),
    "sgd": lambda groups, lr, cfg: nn.Momentum(
        groups, learning_rate=lr, momentum=cfg.momentum, use_nesterov=cfg.nesterov
    ),  # fmt: skip
    "adamw": lambda groups, lr, cfg: nn.AdamWeightDecay(
        groups, learning_rate=lr, beta1=cfg.beta1, beta2=cfg.beta2, eps=cfg.eps
    ),
}


def build_optimizer(cfg: OptimizerConfig, params: list[Parameter], lrs: np.ndarray) -> nn.Optimizer:
    if cfg.name not in OPTIMIZERS:
        raise UserError(f"optimizer.name={cfg.name!r} is unknown; accepted: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[cfg.name](parameter_groups(params, cfg.weight_decay), Tensor(lrs), cfg)
