"""The squeeze-and-excitation block's two passes over its activation, with fused CPU kernels.

:class:`~effv2.models.blocks.SqueezeExcite` runs MindSpore's ReduceMean for the squeeze and its
Sigmoid and broadcasting Mul for the gate ``x * sigmoid(s)``; on CPU (unless
``hardware.cpu_kernels=false``) :func:`use_fused_se` switches every SE block of a network to AOT
custom operators (``effv2/kernels/squeeze_excite.cc``): the squeeze's backward writes ``dm / pixels``
in one pass where MindSpore's tiles and then divides, and the gate's backward makes one pass over
the activation where MindSpore's makes three (``benchmarks/bench_kernels.py``). Exported files keep
MindSpore's operators: the custom operators exist only in this process.
"""

from __future__ import annotations

from mindspore import nn, ops

from effv2.kernels.build import kernel_library
from effv2.models.blocks import SqueezeExcite


class FusedSqueeze(nn.Cell):
    """``x.mean(axis=(2, 3), keep_dims=True)`` for x (N, C, H, W), float32, with its gradient, as
    two AOT custom operators (CPU)."""

    def __init__(self, library: str) -> None:
        super().__init__()
        backward = ops.Custom(
            f"{library}:ChannelMeanGrad", out_shape=lambda x, dm: x, out_dtype=lambda x, dm: x, func_type="aot"
        )

        def bprop(x, out, dout):
            return (backward(x, dout),)

        self.forward = ops.Custom(
            f"{library}:ChannelMean", out_shape=lambda x: [x[0], x[1], 1, 1], out_dtype=lambda x: x, func_type="aot",
            bprop=bprop,
        )  # fmt: skip

    def construct(self, x):
        return self.forward(x)


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


def fused_se() -> tuple[FusedSqueeze, FusedChannelGate] | None:
    """The fused squeeze and gate of this machine, or None when their kernels cannot be built here
    (logged)."""
    library = kernel_library("squeeze_excite")
    return (FusedSqueeze(str(library)), FusedChannelGate(str(library))) if library is not None else None


def use_fused_se(net: nn.Cell) -> str:
    """Run the squeeze and the gate of every SE block of ``net`` through the fused kernels where
    they build; returns what runs, for the log."""
    blocks = [cell for _, cell in net.cells_and_names() if isinstance(cell, SqueezeExcite)]
    if not blocks:
        return "no SE blocks"
    kernels = fused_se()
    if kernels is None:
        return "MindSpore's operators (the fused kernels are not available here)"
    for block in blocks:
        block.squeeze, block.gate = kernels
    return f"the fused squeeze and gate in {len(blocks)} blocks"
