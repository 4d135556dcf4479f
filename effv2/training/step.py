"""One compiled training step: forward, loss, gradients, optional clipping, update."""

from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops


class TrainStep(nn.Cell):
    def __init__(self, net: nn.Cell, loss_fn: nn.Cell, optimizer: nn.Optimizer, clip_grad_norm: float | None) -> None:
        super().__init__(auto_prefix=False)
        self.net = net
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.clip = clip_grad_norm is not None
        self.clip_value = float(clip_grad_norm or 0.0)
        self.grad_fn = ms.value_and_grad(self.forward, None, self.weights)

    def forward(self, images, labels):
        return self.loss_fn(self.net(images), labels)

    def construct(self, images, labels):
        loss, grads = self.grad_fn(images, labels)
        if self.clip:
            grads = ops.clip_by_global_norm(grads, self.clip_value)
        self.optimizer(grads)
        return loss
