"""EfficientNetV2 model family: one builder, one registry of official variants."""

from effv2.models.efficientnetv2 import EfficientNetV2, init_weights
from effv2.models.registry import build_model, model_summary
from effv2.models.variants import VARIANTS, VariantSpec, get_variant

__all__ = ["EfficientNetV2", "VARIANTS", "VariantSpec", "build_model", "get_variant", "init_weights", "model_summary"]
