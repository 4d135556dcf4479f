"""Where each effv2 parameter lives in the official TensorFlow checkpoints, in timm's
``tf_efficientnetv2_*`` state dicts and in the seed's (MindSpore ModelZoo) checkpoints, and how
its layout differs.

Official (google/automl efficientnetv2, Keras layers named in creation order inside a block):
  stem/conv2d, stem/tpu_batch_normalization; blocks_<k>/...; head/conv2d,
  head/tpu_batch_normalization, head/dense.
  Fused-MBConv:  conv2d + tpu_batch_normalization (expand, kxk), [se/conv2d, se/conv2d_1],
                 conv2d_1 + tpu_batch_normalization_1 (project 1x1); with expansion 1 only
                 conv2d + tpu_batch_normalization (kxk).
  MBConv:        conv2d + tpu_batch_normalization (expand 1x1), depthwise_conv2d +
                 tpu_batch_normalization_1, se/conv2d (reduce), se/conv2d_1 (expand),
                 conv2d_1 + tpu_batch_normalization_2 (project).
  Kernels are HWIO, depthwise kernels H W C 1, the dense kernel [in, out].

timm (``efficientnet.py``, PyTorch layouts: OIHW, depthwise C 1 H W, Linear [out, in]):
  conv_stem, bn1; blocks.<stage>.<i>.{conv_exp, bn1, conv_pwl, bn2} (Fused-MBConv with
  expansion, "EdgeResidual"), {conv, bn1} (expansion 1, "ConvBnAct"),
  {conv_pw, bn1, conv_dw, bn2, se.conv_reduce, se.conv_expand, conv_pwl, bn3} (MBConv);
  conv_head, bn2, classifier.

The seed (MindSpore ModelZoo ``official/cv/EfficientNetV2``, read line by line: MindSpore layouts,
as effv2's): features.0 (stem: conv, BN), features.<k+1>.conv.<j> per block (:data:`_SEED_LAYERS`;
SE as two biased 1x1 convolutions in ``conv.6.fc``), conv.{0,1} (head), classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from effv2.models.blocks import ConvBNAct, FusedMBConv, MBConv
from effv2.models.efficientnetv2 import EfficientNetV2

# effv2 BN parameter -> TensorFlow / timm name
_TF_BN = {"gamma": "gamma", "beta": "beta", "moving_mean": "moving_mean", "moving_variance": "moving_variance"}
_TIMM_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def _hwio_to_oihw(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(3, 2, 0, 1)


def _depthwise_to_mindspore(kernel: np.ndarray) -> np.ndarray:
    # H W C 1 -> C 1 H W
    return kernel.transpose(2, 3, 0, 1)


def _dense_to_mindspore(kernel: np.ndarray) -> np.ndarray:
    return kernel.T


def _same(value: np.ndarray) -> np.ndarray:
    return value


@dataclass(frozen=True)
class Source:
    """One effv2 parameter's source tensor name and the layout change to apply."""

    name: str
    transform: Callable[[np.ndarray], np.ndarray] = _same


def _conv_bn(ours: str, conv: Source, bn_prefix: str, bn_names: dict[str, str]) -> dict:
    mapping = {f"{ours}.conv.weight": conv}
    for attr, theirs in bn_names.items():
        mapping[f"{ours}.bn.{attr}"] = Source(f"{bn_prefix}{theirs}")
    return mapping


def official_tf_names(net: EfficientNetV2, scope: str) -> dict[str, Source]:
    """effv2 parameter name -> official TensorFlow variable (without the EMA suffix)."""

    def tf_conv_bn(layer: ConvBNAct, ours: str, prefix: str, conv: str, bn: str) -> dict:
        depthwise = layer.groups > 1
        kernel = (
            Source(f"{prefix}/{conv}/depthwise_kernel", _depthwise_to_mindspore)
            if depthwise
            else Source(f"{prefix}/{conv}/kernel", _hwio_to_oihw)
        )
        return _conv_bn(ours, kernel, f"{prefix}/{bn}/", _TF_BN)

    def numbered(base: str, index: int) -> str:
        return base if index == 0 else f"{base}_{index}"

    mapping = tf_conv_bn(net.stem, "stem", f"{scope}/stem", "conv2d", "tpu_batch_normalization")
    for k, block in enumerate(net.blocks):
        prefix, ours = f"{scope}/blocks_{k}", f"blocks.{k}"
        convs = bns = 0
        layers = ["expand"] if block.has_expand else []
        layers += ["dw"] if isinstance(block, MBConv) else []
        for name in [*layers, "project"]:
            layer = getattr(block, name)
            conv = "depthwise_conv2d" if name == "dw" else numbered("conv2d", convs)
            convs += name != "dw"
            mapping.update(tf_conv_bn(layer, f"{ours}.{name}", prefix, conv, numbered("tpu_batch_normalization", bns)))
            bns += 1
        if block.has_se:
            for ours_se, theirs in (("reduce", "conv2d"), ("expand", "conv2d_1")):
                mapping[f"{ours}.se.{ours_se}.weight"] = Source(f"{prefix}/se/{theirs}/kernel", _hwio_to_oihw)
                mapping[f"{ours}.se.{ours_se}.bias"] = Source(f"{prefix}/se/{theirs}/bias")
    mapping.update(tf_conv_bn(net.head, "head", f"{scope}/head", "conv2d", "tpu_batch_normalization"))
    mapping["classifier.weight"] = Source(f"{scope}/head/dense/kernel", _dense_to_mindspore)
    mapping["classifier.bias"] = Source(f"{scope}/head/dense/bias")
    return mapping


def timm_names(net: EfficientNetV2) -> dict[str, Source]:
    """effv2 parameter name -> timm ``tf_efficientnetv2_*`` state-dict key (same layouts)."""
    mapping = {"stem.conv.weight": Source("conv_stem.weight")}
    mapping.update({f"stem.bn.{a}": Source(f"bn1.{t}") for a, t in _TIMM_BN.items()})
    stages = _stage_positions(net)
    for k, block in enumerate(net.blocks):
        stage, index = stages[k]
        prefix, ours = f"blocks.{stage}.{index}", f"blocks.{k}"
        if isinstance(block, MBConv):
            layers = [("expand", "conv_pw", "bn1"), ("dw", "conv_dw", "bn2"), ("project", "conv_pwl", "bn3")]
            if not block.has_expand:
                layers = [("dw", "conv_dw", "bn1"), ("project", "conv_pw", "bn2")]
        elif isinstance(block, FusedMBConv) and block.has_expand:
            layers = [("expand", "conv_exp", "bn1"), ("project", "conv_pwl", "bn2")]
        else:
            layers = [("project", "conv", "bn1")]
        for name, conv, bn in layers:
            mapping[f"{ours}.{name}.conv.weight"] = Source(f"{prefix}.{conv}.weight")
            mapping.update({f"{ours}.{name}.bn.{a}": Source(f"{prefix}.{bn}.{t}") for a, t in _TIMM_BN.items()})
        if block.has_se:
            for ours_se, theirs in (("reduce", "conv_reduce"), ("expand", "conv_expand")):
                mapping[f"{ours}.se.{ours_se}.weight"] = Source(f"{prefix}.se.{theirs}.weight")
                mapping[f"{ours}.se.{ours_se}.bias"] = Source(f"{prefix}.se.{theirs}.bias")
    mapping["head.conv.weight"] = Source("conv_head.weight")
    mapping.update({f"head.bn.{a}": Source(f"bn2.{t}") for a, t in _TIMM_BN.items()})
    mapping["classifier.weight"] = Source("classifier.weight")
    mapping["classifier.bias"] = Source("classifier.bias")
    return mapping


# the seed's model file (ModelZoo official/cv/EfficientNetV2/src/models/effnetv2.py): each block
# is one SequentialCell ``conv``; where each of effv2's layers sits in it, by block kind
_SEED_LAYERS = {
    "fused_no_expand": [("project", 0, 1)],  # 3x3 conv, BN, SiLU
    "fused": [("expand", 0, 1), ("project", 3, 4)],  # 3x3 conv, BN, SiLU, 1x1 conv, BN
    "mbconv_se": [("expand", 0, 1), ("dw", 3, 4), ("project", 7, 8)],  # ..., SELayer at 6, ...
}
_SEED_SE = 6  # SELayer's index in an MBConv; its ``fc`` holds reduce (0) and expand (2) with biases


def seed_block_kind(block: FusedMBConv | MBConv) -> str | None:
    """The seed's layout for ``block``, or None where the seed has no such block (it builds
    MBConv always with expansion and SE, Fused-MBConv always without SE)."""
    if isinstance(block, FusedMBConv) and not block.has_se:
        return "fused" if block.has_expand else "fused_no_expand"
    if isinstance(block, MBConv) and block.has_expand and block.has_se:
        return "mbconv_se"
    return None


def seed_names(net: EfficientNetV2) -> dict[str, Source]:
    """effv2 parameter name -> the seed's MindSpore parameter name (same layouts): stem
    ``features.0.{0,1}``, block k ``features.<k+1>.conv.<j>``, head ``conv.{0,1}``, ``classifier``."""

    def conv_bn(ours: str, conv: str, bn: str) -> dict[str, Source]:
        return _conv_bn(ours, Source(f"{conv}.weight"), f"{bn}.", {a: a for a in _TF_BN})

    mapping = conv_bn("stem", "features.0.0", "features.0.1")
    for k, block in enumerate(net.blocks):
        kind = seed_block_kind(block)
        assert kind is not None, f"block {k} has no counterpart in the seed's model file"
        prefix = f"features.{k + 1}.conv"
        for name, conv, bn in _SEED_LAYERS[kind]:
            mapping.update(conv_bn(f"blocks.{k}.{name}", f"{prefix}.{conv}", f"{prefix}.{bn}"))
        if block.has_se:
            for ours_se, index in (("reduce", 0), ("expand", 2)):
                for part in ("weight", "bias"):
                    mapping[f"blocks.{k}.se.{ours_se}.{part}"] = Source(f"{prefix}.{_SEED_SE}.fc.{index}.{part}")
    mapping.update(conv_bn("head", "conv.0", "conv.1"))
    mapping["classifier.weight"] = Source("classifier.weight")
    mapping["classifier.bias"] = Source("classifier.bias")
    return mapping


def _stage_positions(net: EfficientNetV2) -> list[tuple[int, int]]:
    """(stage, index in stage) of every block, counted like timm's nested ``blocks``."""
    positions = []
    for stage, spec in enumerate(net.spec.stages):
        positions += [(stage, i) for i in range(net.spec.round_repeats(spec.repeats))]
    return positions
