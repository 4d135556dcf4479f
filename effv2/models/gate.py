"""The squeeze-and-excitation gate ``x * sigmoid(s)`` with a fused CPU kernel.

:class:`~effv2.models.blocks.SqueezeExcite` runs MindSpore's Sigmoid and broadcasting Mul; on CPU
(unless ``hardware.cpu_kernels=false``) :func:`use_fused_gate` switches every SE block of a network
to one AOT custom operator per direction (``effv2/kernels/channel_gate.cc``), whose backward makes
one pass over the activation where MindSpore's makes three (``benchmarks/bench_kernels.py``).
Exported files keep MindSpore's operators: the custom operator exists only in this process.
"""

from __future__ import annotations

from mindspore import nn, ops

from effv2.kernels.build import kernel_library
from effv2.models.blocks import SqueezeExcite


class FusedChannelGate(nn.Cell):
    """``x * sigmoid(s)`` for x (N, C, H, W) and s (N, C, 1, 1), float32, with its gradient for
    both inputs, as two AOT custom operators (CPU)."""

    def __init__(self, library: str) -> None:
        super().__init__()
        backward = ops.Custom(
            f"{library}:ChannelGateGrad", out_shape=lambda x, s, dy: (x, s), out_dtype=lambda x, s, dy: (x, s),
            func_type="aot",
        )  # fmt: skip

        def bprop(x, s, out, dout):
            return backward(x, s, dout)

        self.forward = ops.Custom(
            f"{library}:ChannelGate", out_shape=lambda x, s: x, out_dtype=lambda x, s: x, func_type="aot", bprop=bprop
        )

    def construct(self, x, s):
        return self.forward(x, s)


def fused_gate() -> FusedChannelGate | None:
    """The fused SE gate of this machine, or None when its kernel cannot be built here (logged)."""
    library = kernel_library("channel_gate")
    return FusedChannelGate(str(library)) if library is not None else None


def use_fused_gate(net: nn.Cell) -> str:
    """Run every SE gate of ``net`` through the fused kernel where it builds; returns what runs,
    for the log."""
    blocks = [cell for _, cell in net.cells_and_names() if isinstance(cell, SqueezeExcite)]
    if not blocks:
        return "no SE blocks"
    kernel = fused_gate()
    if kernel is None:
        return "MindSpore's Sigmoid x Mul (the fused kernel is not available here)"
    for block in blocks:
        block.gate = kernel
    return f"the fused kernel in {len(blocks)} blocks"
