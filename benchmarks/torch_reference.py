"""A plain-PyTorch EfficientNetV2, the peer of the benchmarks and the source of timm-layout
state dicts in the tests.

Module names follow timm's ``tf_efficientnetv2_*`` models (conv_stem, bn1, blocks.<stage>.<i>.
{conv, conv_exp, conv_pw, conv_dw, se.conv_reduce, se.conv_expand, conv_pwl, bn1..3}, conv_head,
bn2, classifier), convolutions pad like TensorFlow's "same", BN eps 1e-3. The block structure
comes from effv2's variant table, so both frameworks build the same network (the tests assert
equal parameter counts).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from effv2.models.variants import VariantSpec, get_variant


class Conv2dSame(nn.Conv2d):
    """Convolution with TensorFlow "same" padding (the extra pixel goes bottom / right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> Conv2dSame:
    return Conv2dSame(cin, cout, kernel, stride, groups=groups, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.1)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv_expand(F.silu(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class ConvBnAct(nn.Module):
    """Fused-MBConv with expansion 1: one kxk convolution."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv, self.bn1 = _conv(cin, cout, kernel, stride), _bn(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.silu(self.bn1(self.conv(x)))
        return out + x if self.has_skip else out


class EdgeResidual(nn.Module):
    """Fused-MBConv: kxk expansion, 1x1 projection."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.conv_exp, self.bn1 = _conv(cin, mid, kernel, stride), _bn(mid)
        self.conv_pwl, self.bn2 = _conv(mid, cout, 1), _bn(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pwl(F.silu(self.bn1(self.conv_exp(x)))))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expansion, depthwise kxk, squeeze-excite, 1x1 projection."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, se_ratio: float) -> None:
        super().__init__()
        mid = cin * expand
        self.conv_pw, self.bn1 = _conv(cin, mid, 1), _bn(mid)
        self.conv_dw, self.bn2 = _conv(mid, mid, kernel, stride, groups=mid), _bn(mid)
        self.se = SqueezeExcite(mid, max(1, int(cin * se_ratio)))
        self.conv_pwl, self.bn3 = _conv(mid, cout, 1), _bn(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.silu(self.bn2(self.conv_dw(F.silu(self.bn1(self.conv_pw(x))))))
        out = self.bn3(self.conv_pwl(self.se(out)))
        return out + x if self.has_skip else out


class TorchEfficientNetV2(nn.Module):
    def __init__(self, spec: VariantSpec, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv_stem, self.bn1 = _conv(3, spec.stem_channels, 3, 2), _bn(spec.stem_channels)
        stages = []
        for stage in spec.stages:
            cin, cout = spec.round_channels(stage.in_channels), spec.round_channels(stage.out_channels)
            blocks = []
            for i in range(spec.round_repeats(stage.repeats)):
                args = (cin if i == 0 else cout, cout, stage.kernel, stage.stride if i == 0 else 1)
                if not stage.fused:
                    blocks.append(InvertedResidual(*args, stage.expand_ratio, stage.se_ratio))
                elif stage.expand_ratio == 1:
                    blocks.append(ConvBnAct(*args))
                else:
                    blocks.append(EdgeResidual(*args, stage.expand_ratio))
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        features = spec.round_channels(spec.head_channels)
        last = spec.round_channels(spec.stages[-1].out_channels)
        self.conv_head, self.bn2 = _conv(last, features, 1), _bn(features)
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.bn1(self.conv_stem(x)))
        x = F.silu(self.bn2(self.conv_head(self.blocks(x))))
        return self.classifier(x.mean((2, 3)))


def build(variant: str, num_classes: int = 1000) -> TorchEfficientNetV2:
    return TorchEfficientNetV2(get_variant(variant), num_classes)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
