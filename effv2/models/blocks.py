"""Building blocks of EfficientNetV2, with the official TensorFlow semantics.

Every block also counts its own multiply-adds (``macs``) for a given input size, so the FLOPs
figure is derived from the cells that actually run rather than from a second description.
Convolutions use MindSpore's ``pad_mode="same"``, which places the extra padding of an even
stride-2 window at the bottom/right exactly as TensorFlow does (tested in ``tests/``).
"""

from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from effv2.models.activation import SiLU
from effv2.models.noise import counter_uniform, salt_key


def _out_size(size: int, stride: int) -> int:
    return math.ceil(size / stride)


# below this many pixels per channel the fused batch norm's per-row loops lose to MindSpore's BatchNorm
# (bench_kernels.py, batch 32, Xeon: 0.84x at 4x4, 1.42-1.44x at 2x2 and 1x1, the demo's last stages)
FUSED_BN_MIN_PIXELS = 16


class ConvBNAct(nn.Cell):
    """Convolution without bias, batch norm, optional SiLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel, stride=stride, pad_mode="same", group=groups, has_bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act = SiLU() if act else nn.Identity()
        self.has_act = act
        # batch norm (+ SiLU) as fused CPU kernels while training (effv2.models.fused_bn), or None
        self.fused_bn: nn.Cell | None = None
        # an attribute, not the module's name: MindSpore's amp rewrite (O1) re-parses construct
        # outside this module, where module-level names are not visible
        self.fused_bn_min_pixels = FUSED_BN_MIN_PIXELS
        self.kernel, self.stride, self.groups = kernel, stride, groups
        self.in_channels, self.out_channels = in_channels, out_channels

    def construct(self, x):
        x = self.conv(x)
        # shapes are static in a compiled graph: the branch is chosen once per input size
        if self.fused_bn is not None and self.training and x.shape[2] * x.shape[3] >= self.fused_bn_min_pixels:
            bn = self.bn
            return self.fused_bn(x, bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)
        return self.act(self.bn(x))

    def macs(self, height: int, width: int) -> tuple[int, int, int]:
        out_h, out_w = _out_size(height, self.stride), _out_size(width, self.stride)
        per_pixel = self.kernel * self.kernel * (self.in_channels // self.groups) * self.out_channels
        return out_h * out_w * per_pixel, out_h, out_w


class SqueezeExcite(nn.Cell):
    """Global pool, 1x1 reduce (with bias) + SiLU, 1x1 expand (with bias), sigmoid gate."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, has_bias=True)
        self.expand = nn.Conv2d(reduced, channels, 1, has_bias=True)
        self.act = SiLU()
        self.channels, self.reduced = channels, reduced
        # the mean over the pixels and x * sigmoid(scale) as fused CPU operators
        # (effv2.models.fused_se), or None: MindSpore's operators
        self.squeeze: nn.Cell | None = None
        self.gate: nn.Cell | None = None

    def construct(self, x):
        if self.squeeze is not None:
            scale = self.squeeze(x)
        else:
            scale = x.mean(axis=(2, 3), keep_dims=True)
        scale = self.expand(self.act(self.reduce(scale)))
        if self.gate is not None:
            return self.gate(x, scale)
        return x * ops.sigmoid(scale)

    def macs(self) -> int:
        return 2 * self.channels * self.reduced


class CounterDropout(nn.Cell):
    """Dropout with reproducible masks (see :mod:`effv2.models.noise`): element-wise, or whole
    samples at once with ``per_sample=True``. Kept values are scaled by 1 / keep_prob."""

    def __init__(self, rate: float, salt: int, per_sample: bool = False) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate {rate} is outside [0, 1)")
        self.rate = rate
        self.salt = salt
        self.key = salt_key(salt)
        self.per_sample = per_sample

    def construct(self, x, step):
        if not self.training or self.rate <= 0.0:
            return x
        shape = (x.shape[0], 1, 1, 1) if self.per_sample else x.shape
        keep = counter_uniform(shape, step, self.key) >= self.rate
        return x * keep.astype(x.dtype) / (1.0 - self.rate)


class AdjustableDropout(nn.Cell):
    """Element-wise :class:`CounterDropout` whose rate is a Parameter, so progressive learning
    can change it between stages: a Python attribute is frozen into the compiled graph, and
    MindSpore silently keeps running the cached graph with the old value."""

    def __init__(self, rate: float, salt: int) -> None:
        super().__init__()
        self.rate = Parameter(Tensor(np.array([0.0], np.float32)), name="rate", requires_grad=False)
        self.set_rate(rate)
        self.key = salt_key(salt)

    def set_rate(self, rate: float) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate {rate} is outside [0, 1)")
        self.rate.set_data(Tensor(np.array([rate], np.float32)))

    def construct(self, x, step):
        if not self.training:
            return x
        rate = self.rate.reshape(()).astype(x.dtype)
        keep = counter_uniform(x.shape, step, self.key) >= rate.astype(ms.float32)
        return x * keep.astype(x.dtype) / (1.0 - rate)


class DropPath(CounterDropout):
    """Stochastic depth: drops the whole residual branch per sample while training, like the
    official ``drop_connect``."""

    def __init__(self, rate: float, salt: int) -> None:
        super().__init__(rate, salt, per_sample=True)


class _ResidualBlock(nn.Cell):
    """Shared residual logic: a skip only when stride is 1 and channels are unchanged."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, drop_path_rate: float, salt: int) -> None:
        super().__init__()
        self.has_residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path_rate if self.has_residual else 0.0, salt)

    def branch(self, x):
        raise NotImplementedError

    def construct(self, x, step):
        out = self.branch(x)
        if self.has_residual:
            out = self.drop_path(out, step) + x
        return out

    def macs(self, height: int, width: int) -> tuple[int, int, int]:
        total = 0
        for name in ("expand", "dw", "se", "project"):
            layer = getattr(self, name, None)
            if isinstance(layer, SqueezeExcite):
                total += layer.macs()
            elif layer is not None:
                macs, height, width = layer.macs(height, width)
                total += macs
        return total, height, width


class MBConv(_ResidualBlock):
    """1x1 expand, depthwise kxk, squeeze-excite, 1x1 project (no activation)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        expand_ratio: int,
        se_ratio: float,
        drop_path_rate: float,
        bn_eps: float,
        bn_momentum: float,
        salt: int = 0,
    ) -> None:
        super().__init__(in_channels, out_channels, stride, drop_path_rate, salt)
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        expanded = in_channels * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self.expand = ConvBNAct(in_channels, expanded, 1, **bn)
        self.dw = ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, **bn)
        self.has_se = se_ratio > 0
        if self.has_se:
            self.se = SqueezeExcite(expanded, max(1, int(in_channels * se_ratio)))
        self.project = ConvBNAct(expanded, out_channels, 1, act=False, **bn)

    def branch(self, x):
        if self.has_expand:
            x = self.expand(x)
        x = self.dw(x)
        if self.has_se:
            x = self.se(x)
        return self.project(x)


class FusedMBConv(_ResidualBlock):
    """kxk expand conv then 1x1 project; with expansion 1 a single kxk conv + BN + SiLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        expand_ratio: int,
        se_ratio: float,
        drop_path_rate: float,
        bn_eps: float,
        bn_momentum: float,
        salt: int = 0,
    ) -> None:
        super().__init__(in_channels, out_channels, stride, drop_path_rate, salt)
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.has_expand = expand_ratio != 1
        self.has_se = se_ratio > 0
        if self.has_expand:
            expanded = in_channels * expand_ratio
            self.expand = ConvBNAct(in_channels, expanded, kernel, stride, **bn)
            if self.has_se:
                self.se = SqueezeExcite(expanded, max(1, int(in_channels * se_ratio)))
            self.project = ConvBNAct(expanded, out_channels, 1, act=False, **bn)
        else:
            if self.has_se:
                raise ValueError("a Fused-MBConv block with expansion 1 has no place for squeeze-excite")
            self.project = ConvBNAct(in_channels, out_channels, kernel, stride, **bn)

    def branch(self, x):
        if self.has_expand:
            x = self.expand(x)
            if self.has_se:
                x = self.se(x)
        return self.project(x)


def convert_to_sync_bn(net: nn.Cell) -> int:
    """Swap every ConvBNAct's BatchNorm2d for nn.SyncBatchNorm (statistics over all devices of a
    data-parallel job, for Ascend), keeping the very same Parameter objects and so their names
    and values. Returns the number of layers converted."""
    converted = 0
    for _, cell in net.cells_and_names():
        if isinstance(cell, ConvBNAct) and type(cell.bn) is nn.BatchNorm2d:
            old = cell.bn
            names = {attr: getattr(old, attr).name for attr in ("gamma", "beta", "moving_mean", "moving_variance")}
            # _BatchNorm keeps 1 - momentum internally
            new = nn.SyncBatchNorm(old.num_features, eps=old.eps, momentum=1.0 - old.momentum)
            for attr in names:
                setattr(new, attr, getattr(old, attr))
            cell.bn = new
            cell.fused_bn = None  # the statistics are the devices' together now: SyncBatchNorm's
            for attr, name in names.items():
                getattr(new, attr).name = name
            converted += 1
    return converted
