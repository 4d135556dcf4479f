"""SiLU, the activation of every EfficientNetV2 block, with a fused CPU kernel.

The cell runs MindSpore's own ``ops.silu``. On CPU (unless ``hardware.cpu_kernels=false``),
:func:`use_fastest_silu` switches every SiLU of a network to one AOT custom operator per
direction (``effv2/kernels/silu.cc``): one pass over the tensor forward and one backward. Where
the kernel cannot be built (no compiler), it switches to Sigmoid x Mul, which MindSpore's CPU
runs faster than its own ``ops.silu`` (``benchmarks/bench_kernels.py``). Exported files keep
``ops.silu``: the custom operator exists only in this process's library.
"""

from __future__ import annotations

import logging

from mindspore import nn, ops

from effv2.kernels.build import kernel_library

log = logging.getLogger(__name__)


class SiLU(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.kernel: nn.Cell | None = None

    def construct(self, x):
        if self.kernel is not None:
            return self.kernel(x)
        return ops.silu(x)


class FusedSiLU(nn.Cell):
    """x * sigmoid(x) and its gradient as two AOT custom operators (float32, CPU)."""

    def __init__(self, library: str) -> None:
        super().__init__()
        backward = ops.Custom(
            f"{library}:SiLUGrad", out_shape=lambda x, dy: x, out_dtype=lambda x, dy: x, func_type="aot"
        )

        def bprop(x, out, dout):
            return (backward(x, dout),)

        self.forward = ops.Custom(
            f"{library}:SiLU", out_shape=lambda x: x, out_dtype=lambda x: x, func_type="aot", bprop=bprop
        )

    def construct(self, x):
        return self.forward(x)


class SigmoidMul(nn.Cell):
    def construct(self, x):
        return x * ops.sigmoid(x)


def fused_silu() -> FusedSiLU | None:
    """The fused SiLU of this machine, or None when its kernel cannot be built here (logged)."""
    library = kernel_library("silu")
    return FusedSiLU(str(library)) if library is not None else None


def set_silu(net: nn.Cell, kernel: nn.Cell | None) -> int:
    """Run every :class:`SiLU` of ``net`` with ``kernel`` (None: ``ops.silu``); returns how many."""
    cells = [cell for _, cell in net.cells_and_names() if isinstance(cell, SiLU)]
    for cell in cells:
        cell.kernel = kernel
    return len(cells)


def use_fastest_silu(net: nn.Cell) -> str:
    """The fastest SiLU this CPU has for every activation of ``net``: the fused kernel, or
    Sigmoid x Mul without a compiler; returns which, for the log."""
    kernel = fused_silu()
    if kernel is None:
        set_silu(net, SigmoidMul())
        return "Sigmoid x Mul (the fused kernel is not available here)"
    return f"the fused kernel in {set_silu(net, kernel)} activations"
