"""effv2's own CPU kernels in the network (on CPU unless ``hardware.cpu_kernels=false``): the fused
SiLU, the fused squeeze-and-excitation squeeze and gate, the fused batch norm (+ SiLU) while
training, and the oneDNN depthwise and regular convolutions, each falling back to MindSpore's
operators where it cannot be built. The optimizer's fused step is effv2.training.rmsprop_tf's."""

from __future__ import annotations

from mindspore import nn

from effv2.models.activation import use_fastest_silu
from effv2.models.convolution import ONEDNN_KINDS, onednn_conv_library, set_onednn_conv
from effv2.models.fused_bn import use_fused_bn
from effv2.models.fused_se import use_fused_se


def use_cpu_kernels(net: nn.Cell) -> str:
    """Switch ``net`` to the fastest SiLU, SE squeeze and gate, batch norm and convolutions this machine can build;
    returns what it runs, for the log."""
    library = onednn_conv_library()
    if library is None:
        convolutions = "MindSpore's convolutions (oneDNN is not available here)"
    else:
        convolutions = f"oneDNN in {set_onednn_conv(net, library)} {' and '.join(ONEDNN_KINDS)} convolutions"
    return f"SiLU: {use_fastest_silu(net)}; SE: {use_fused_se(net)}; BN: {use_fused_bn(net)}; {convolutions}"
