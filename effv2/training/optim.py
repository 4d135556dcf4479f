"""Optimizers from the ``optimizer`` config group, with weight decay kept off BN and biases."""

from __future__ import annotations

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


def build_optimizer(cfg: OptimizerConfig, params: list[Parameter], lrs: np.ndarray) -> nn.Optimizer:
    groups = parameter_groups(params, cfg.weight_decay)
    lr = Tensor(lrs)
    if cfg.name == "rmsprop":
        return TFRMSProp(groups, learning_rate=lr, decay=cfg.decay, momentum=cfg.momentum, epsilon=cfg.eps)
    if cfg.name == "sgd":
        return nn.Momentum(groups, learning_rate=lr, momentum=cfg.momentum, use_nesterov=cfg.nesterov)
    if cfg.name == "adamw":
        return nn.AdamWeightDecay(groups, learning_rate=lr, beta1=cfg.beta1, beta2=cfg.beta2, eps=cfg.eps)
    raise UserError(f"optimizer.name={cfg.name!r} is unknown; accepted: rmsprop, sgd, adamw")
