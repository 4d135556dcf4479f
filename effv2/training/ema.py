"""Exponential moving average of the weights (and BN statistics), updated inside the step.

The shadow copy is a second model instance whose parameters are renamed ``ema.<name>``, so it
can be evaluated directly and lands in checkpoints beside the raw weights.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

EMA_PREFIX = "ema."

_ema_update = ops.MultitypeFuncGraph("ema_update")


@_ema_update.register("Tensor", "Tensor", "Tensor")
def _ema_update_one(decay, shadow, value):
    return ops.assign(shadow, shadow * decay + value * (1.0 - decay))


def averaged_parameters(net: nn.Cell) -> list[Parameter]:
    """Weights and BN moving statistics; not the step counter nor the dropout rate."""
    return [
        p
        for p in net.get_parameters()
        if p.dtype in (ms.float32, ms.float16) and (p.requires_grad or "moving_" in p.name)
    ]


class EMA(nn.Cell):
    def __init__(self, net: nn.Cell, shadow_net: nn.Cell, decay: float, warmup: bool) -> None:
        super().__init__(auto_prefix=False)
        for param in shadow_net.get_parameters():
            if not param.name.startswith(EMA_PREFIX):
                param.name = EMA_PREFIX + param.name
        values = averaged_parameters(net)
        by_name = {p.name: p for p in averaged_parameters(shadow_net)}
        shadows = [by_name[EMA_PREFIX + value.name] for value in values]
        for value, shadow in zip(values, shadows, strict=True):
            shadow.set_data(value.data.copy())
        self.values = ParameterTuple(values)
        self.shadows = ParameterTuple(shadows)
        self.shadow_net = shadow_net
        self.decay = Tensor(np.array([decay], np.float32))
        self.warmup = warmup
        self.updates = Parameter(Tensor(np.array([0], np.float32)), name="ema.updates", requires_grad=False)
        self.hyper_map = ops.HyperMap()

    def construct(self):
        decay = self.decay
        if self.warmup:
            decay = ops.minimum(decay, (1.0 + self.updates) / (10.0 + self.updates))
        done = self.hyper_map(ops.partial(_ema_update, decay.reshape(())), self.shadows, self.values)
        return ops.depend(ops.assign_add(self.updates, ops.ones_like(self.updates)), done)
