"""Batch normalisation with the SiLU after it, as fused CPU kernels for training.

:class:`~effv2.models.blocks.ConvBNAct` runs MindSpore's BatchNorm and then the SiLU: the
normalised tensor is written, kept for the backward pass and read again by the SiLU's forward and
backward. On CPU (unless ``hardware.cpu_kernels=false``) :func:`use_fused_bn` switches every
ConvBNAct of a network to AOT custom operators (``effv2/kernels/batchnorm_silu.cc``) while it
trains: the forward writes only the activation, the backward recomputes the normalised value from
the input and the batch's statistics. Evaluation, exported files and layers of fewer than
``FUSED_BN_MIN_PIXELS`` pixels per channel keep MindSpore's operators.
"""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, nn, ops

from effv2.kernels.build import kernel_library
from effv2.models.blocks import FUSED_BN_MIN_PIXELS, ConvBNAct


class FusedBatchNormAct(nn.Cell):
    """Training-mode ``silu(batch_norm(x))`` (or batch norm alone, ``act=False``) for x (N, C, H, W),
    float32, with its gradients for x, gamma and beta; updates the moving statistics in place
    with ``momentum`` as MindSpore's BatchNorm takes it (the batch's weight, 1 - the layer's)."""

    def __init__(self, library: str, eps: float, momentum: float, act: bool) -> None:
        super().__init__()
        self.constants = Tensor(np.array([eps, momentum, 1.0 if act else 0.0], np.float32))
        backward = ops.Custom(
            f"{library}:BatchNormSiLUGrad", out_shape=lambda x, gamma, *rest: (x, gamma, gamma),
            out_dtype=lambda x, *rest: (x, x, x), func_type="aot",
        )  # fmt: skip

        def bprop(x, gamma, beta, moving_mean, moving_variance, constants, out, dout):
            dx, dgamma, dbeta = backward(x, gamma, beta, out[1], out[2], dout[0], constants)
            return (dx, dgamma, dbeta, ops.zeros_like(moving_mean), ops.zeros_like(moving_variance),
                    ops.zeros_like(constants))  # fmt: skip

        self.forward = ops.Custom(
            f"{library}:BatchNormSiLU", out_shape=lambda x, gamma, *rest: (x, gamma, gamma),
            out_dtype=lambda x, *rest: (x, x, x), func_type="aot", bprop=bprop,
        )  # fmt: skip
        # it writes the moving statistics it was handed: the graph orders it among the other
        # operators that read or write memory, as it does MindSpore's BatchNorm
        self.forward.add_prim_attr("side_effect_mem", True)

    def construct(self, x, gamma, beta, moving_mean, moving_variance):
        return self.forward(x, gamma, beta, moving_mean, moving_variance, self.constants)[0]


def use_fused_bn(net: nn.Cell) -> str:
    """Run the batch norm (+ SiLU) of every ConvBNAct of ``net`` through the fused kernels while it
    trains, where they build; returns what runs, for the log."""
    layers = [
        cell for _, cell in net.cells_and_names() if isinstance(cell, ConvBNAct) and type(cell.bn) is nn.BatchNorm2d
    ]
    if not layers:
        return "no batch norm layers"
    library = kernel_library("batchnorm_silu")
    if library is None:
        return "MindSpore's operators (the fused kernels are not available here)"
    shared: dict[tuple[float, float, bool], FusedBatchNormAct] = {}
    for layer in layers:
        # _BatchNorm keeps the batch's weight, 1 - the momentum it was given
        key = (float(layer.bn.eps), float(layer.bn.momentum), layer.has_act)
        if key not in shared:
            shared[key] = FusedBatchNormAct(str(library), *key)
        layer.fused_bn = shared[key]
    with_act = sum(layer.has_act for layer in layers)
    return f"the fused batch norm in {len(layers)} layers ({with_act} with their SiLU) at {FUSED_BN_MIN_PIXELS}+ pixels"
