"""EfficientNetV2 on MindSpore. ``from effv2 import Predictor`` is the inference API for code that
embeds an exported model (effv2/deploy/predictor.py)."""

from typing import Any


def __getattr__(name: str) -> Any:
    # lazy: importing the package (as run.py and the launcher do) must not load onnxruntime
    if name == "Predictor":
        from effv2.deploy.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'effv2' has no attribute {name!r}")
