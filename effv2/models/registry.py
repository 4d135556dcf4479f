"""Build a model from the ``model`` config group."""

from __future__ import annotations

from effv2.config.schema import ModelConfig
from effv2.models.efficientnetv2 import EfficientNetV2, init_weights
from effv2.models.variants import get_variant, resolved_drop_rate


def build_model(cfg: ModelConfig, seed: int = 0, noise_seed: int | None = None) -> EfficientNetV2:
    """``cfg`` is the ``model`` config node (see ``effv2.config.schema.ModelConfig``); ``seed``
    draws the initial weights, ``noise_seed`` (default: ``seed``) the dropout masks."""
    net = EfficientNetV2(
        get_variant(cfg.name),
        num_classes=cfg.num_classes,
        in_channels=cfg.in_channels,
        drop_rate=resolved_drop_rate(cfg),
        drop_path_rate=cfg.drop_path_rate,
        bn_eps=cfg.bn_eps,
        bn_momentum=cfg.bn_momentum,
        noise_seed=seed if noise_seed is None else noise_seed,
    )
    init_weights(net, seed)
    return net


def count_parameters(net: EfficientNetV2) -> int:
    return sum(int(p.size) for p in net.trainable_params())


def model_summary(net: EfficientNetV2, image_size: int) -> str:
    return (
        f"{net.spec.name}: {count_parameters(net):,} trainable parameters, "
        f"{net.macs(image_size) / 1e9:.3f} G multiply-adds at {image_size}px, {net.num_classes} classes"
    )
