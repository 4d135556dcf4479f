"""Convolutions on oneDNN 3.x, as AOT custom operators on CPU.

MindSpore 2.10's CPU convolution runs its bundled oneDNN on plain NCHW tensors, which sends the
depthwise convolutions of every MBConv block to oneDNN's generic GEMM path: 3x slower forward +
backward than the same oneDNN on its own blocked layouts, where it picks its depthwise JIT kernels
(``benchmarks/bench_conv.py``, B0's layers). On CPU (unless ``hardware.cpu_kernels=false``) the depthwise and
the regular kxk convolutions (stem, Fused-MBConv) run through ``effv2/kernels/conv_onednn.cc``
(forward, backward-data, backward-weights, on a thread pool of the kernel's own): MindSpore's own
oneDNN, called with the layouts it prefers. The 1x1 convolutions stay on MindSpore's operator,
which is faster there (the kernel's reorders in and out cost more than its layouts gain).
Exported files keep ``nn.Conv2d``: the custom operator exists only in this process.
"""

from __future__ import annotations

import math

from mindspore import nn, ops

from effv2.kernels.build import onednn_conv_library
from effv2.models.blocks import ConvBNAct

__all__ = ["OneDNNConv", "OneDNNConv2d", "conv_kind", "onednn_conv_library", "set_onednn_conv"]


class OneDNNConv(nn.Cell):
    """``conv(x, weight)`` with "same" padding, no bias, at one stride, forward and both gradients
    as oneDNN primitives (float32, CPU). Groups follow from the shapes (depthwise: weight (C, 1, k, k))."""

    def __init__(self, library: str, stride: int) -> None:
        super().__init__()

        def out_shape(x, weight):
            return [x[0], weight[0], math.ceil(x[2] / stride), math.ceil(x[3] / stride)]

        grad_input = ops.Custom(f"{library}:Conv2DGradInput", out_shape=lambda dy, weight, x: x,
                                out_dtype=lambda dy, weight, x: x, func_type="aot")  # fmt: skip
        grad_weights = ops.Custom(f"{library}:Conv2DGradWeights", out_shape=lambda x, dy, weight: weight,
                                  out_dtype=lambda x, dy, weight: weight, func_type="aot")  # fmt: skip

        def bprop(x, weight, out, dout):
            return grad_input(dout, weight, x), grad_weights(x, dout, weight)

        self.forward = ops.Custom(f"{library}:Conv2D", out_shape=out_shape, out_dtype=lambda x, weight: x,
                                  func_type="aot", bprop=bprop)  # fmt: skip

    def construct(self, x, weight):
        return self.forward(x, weight)


def conv_kind(conv: nn.Conv2d) -> str:
    """The kind of a convolution: "depthwise" (a group per channel), "pointwise" (1x1) or "regular"."""
    if conv.group > 1 and conv.group == conv.in_channels == conv.out_channels:
        return "depthwise"
    return "pointwise" if conv.kernel_size == (1, 1) else "regular"


# the kinds effv2 runs on oneDNN (benchmarks/bench_conv.py, B0 at 128 px, 2-core Xeon): depthwise 3.1x
# MindSpore's time, regular 1.34x with the kernel's thread pool; 1x1 convolutions 0.73x, so not them
ONEDNN_KINDS = ("depthwise", "regular")


class OneDNNConv2d(nn.Cell):
    """Stands in for a block's ``nn.Conv2d``: the same weight Parameter (same name, so checkpoints
    and optimizer state are unchanged) through :class:`OneDNNConv`. A replaced cell rather than a
    branch in ConvBNAct: MindSpore's O1 mixed precision rewrites the network's source, and a branch
    there made it copy BatchNorm's code without its imports."""

    def __init__(self, conv: nn.Conv2d, op: OneDNNConv) -> None:
        super().__init__()
        self.weight = conv.weight
        self.op = op

    def construct(self, x):
        return self.op(x, self.weight)


def set_onednn_conv(net: nn.Cell, library: str, kinds: tuple[str, ...] = ONEDNN_KINDS) -> int:
    """Run the block convolutions of ``net`` of the given kinds through the oneDNN kernel in
    ``library``; returns how many."""
    blocks = [cell for _, cell in net.cells_and_names() if isinstance(cell, ConvBNAct)]
    cells = [cell for cell in blocks if isinstance(cell.conv, nn.Conv2d) and conv_kind(cell.conv) in kinds]
    kernels: dict[int, OneDNNConv] = {}
    for cell in cells:
        if cell.stride not in kernels:
            kernels[cell.stride] = OneDNNConv(library, cell.stride)
        name = cell.conv.weight.name
        cell.conv = OneDNNConv2d(cell.conv, kernels[cell.stride])
        cell.conv.weight.name = name  # attaching the cell renamed it
    return len(cells)
