"""EfficientNetV2 network built from a :class:`VariantSpec`.

Parameter names are stable and documented because checkpoint conversion, export and resume
depend on them::

    stem.conv.weight, stem.bn.{gamma,beta,moving_mean,moving_variance}
    blocks.<k>.expand.conv.weight / .expand.bn.*   (absent for expansion 1)
    blocks.<k>.dw.conv.weight / .dw.bn.*           (MBConv only: depthwise kxk)
    blocks.<k>.se.reduce.{weight,bias}, blocks.<k>.se.expand.{weight,bias}
    blocks.<k>.project.conv.weight / .project.bn.*
    head.conv.weight, head.bn.*
    classifier.weight [classes, features], classifier.bias
    dropout.rate                                   (the head dropout rate, a Parameter so that
                                                    progressive learning changes it per stage)
    rng_step                                       (int64 training-step counter for the
                                                    reproducible dropout / stochastic depth masks)

``<k>`` counts blocks over all stages, exactly like the official ``blocks_<k>`` scopes.
"""

from __future__ import annotations

import math

import numpy as np
from mindspore import Parameter, Tensor, nn

from effv2.models.blocks import AdjustableDropout, ConvBNAct, FusedMBConv, MBConv
from effv2.models.variants import VariantSpec, drop_rate_of


class EfficientNetV2(nn.Cell):
    def __init__(
        self,
        spec: VariantSpec,
        num_classes: int = 1000,
        in_channels: int = 3,
        drop_rate: float | None = None,
        drop_path_rate: float = 0.2,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.9,
        noise_seed: int = 0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.spec = spec
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.stem = ConvBNAct(in_channels, spec.stem_channels, 3, 2, **bn)

        repeats = [spec.round_repeats(stage.repeats) for stage in spec.stages]
        total_blocks = sum(repeats)
        blocks = []
        for stage, count in zip(spec.stages, repeats, strict=True):
            stage_in = spec.round_channels(stage.in_channels)
            stage_out = spec.round_channels(stage.out_channels)
            block_cls = FusedMBConv if stage.fused else MBConv
            for r in range(count):
                blocks.append(
                    block_cls(
                        stage_in if r == 0 else stage_out,
                        stage_out,
                        stage.kernel,
                        stage.stride if r == 0 else 1,
                        stage.expand_ratio,
                        stage.se_ratio,
                        drop_path_rate * len(blocks) / total_blocks,
                        **bn,
                        salt=_salt(noise_seed, len(blocks)),
                    )
                )
        self.blocks = nn.CellList(blocks)
        self.num_features = spec.round_channels(spec.head_channels)
        self.head = ConvBNAct(spec.round_channels(spec.stages[-1].out_channels), self.num_features, 1, **bn)
        self.dropout = AdjustableDropout(drop_rate_of(spec, drop_rate), _salt(noise_seed, total_blocks))
        self.num_classes = num_classes
        self.classifier = nn.Dense(self.num_features, num_classes)
        self.rng_step = Parameter(Tensor(np.zeros((1,), np.int64)), name="rng_step", requires_grad=False)

    def forward_features(self, x):
        """Pooled features before the classifier, shape [N, num_features]."""
        x = self.stem(x)
        for block in self.blocks:
            x = block(x, self.rng_step)
        return self.head(x).mean(axis=(2, 3))

    def construct(self, x):
        return self.classifier(self.dropout(self.forward_features(x), self.rng_step))

    def reset_classifier(self, num_classes: int, seed: int = 0) -> None:
        """Swap the classifier for ``num_classes`` outputs with the official initialisation."""
        self.num_classes = num_classes
        self.classifier = nn.Dense(self.num_features, num_classes)
        _init_dense(self.classifier, np.random.default_rng(seed))

    def macs(self, height: int, width: int | None = None) -> int:
        """Multiply-adds of one forward pass at the given input size (convolutions and dense)."""
        width = height if width is None else width
        total, h, w = self.stem.macs(height, width)
        for block in self.blocks:
            macs, h, w = block.macs(h, w)
            total += macs
        macs, h, w = self.head.macs(h, w)
        return total + macs + self.num_features * self.num_classes


def _salt(noise_seed: int, layer: int) -> int:
    return (noise_seed * 1_000_003 + layer) & 0xFFFFFFFF


def _init_dense(dense: nn.Dense, rng: np.random.Generator) -> None:
    # official dense init: U(-1/sqrt(out), 1/sqrt(out)) on the [in, out] kernel, zero bias
    limit = 1.0 / math.sqrt(dense.weight.shape[0])
    dense.weight.set_data(Tensor(rng.uniform(-limit, limit, dense.weight.shape).astype(np.float32)))
    dense.bias.set_data(Tensor(np.zeros(dense.bias.shape, np.float32)))


def init_weights(net: EfficientNetV2, seed: int) -> None:
    """The official initialisation, deterministic for a seed.

    Convolutions: N(0, sqrt(2 / fan_out)) with fan_out = kh * kw * out_channels / groups
    (the TensorFlow kernel's last axis, 1 for depthwise). Biases zero, BN gamma 1 / beta 0.
    """
    rng = np.random.default_rng(seed)
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            out_c, _, kh, kw = cell.weight.shape
            fan_out = kh * kw * out_c // cell.group
            std = math.sqrt(2.0 / fan_out)
            cell.weight.set_data(Tensor(rng.normal(0.0, std, cell.weight.shape).astype(np.float32)))
            if cell.bias is not None:
                cell.bias.set_data(Tensor(np.zeros(cell.bias.shape, np.float32)))
    _init_dense(net.classifier, rng)
