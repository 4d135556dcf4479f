"""Writes, with TensorFlow itself, checkpoints in the layout of the official EfficientNetV2
release, and the logits TensorFlow computes from them (run as a subprocess by
test_conversion_tf.py, so TensorFlow never shares a process with MindSpore).

The network is Keras' own EfficientNetV2 (keras.applications), an implementation independent of
effv2's, with random weights and BN statistics. Its variables are saved under the official
names (``efficientnetv2-b0/blocks_3/depthwise_conv2d/depthwise_kernel``, ...), raw and with the
``/ExponentialMovingAverage`` suffix (other values), beside a ``global_step`` and an optimizer
slot, as released checkpoints have them.

    python tests/tf_official_checkpoint.py <variant: b0|b3|s> <out dir>
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

MODELS = {"b0": "EfficientNetV2B0", "b3": "EfficientNetV2B3", "s": "EfficientNetV2S"}
EMA = "/ExponentialMovingAverage"


def official_names(model: keras.Model, scope: str) -> dict[str, str]:
    """Keras variable path -> official variable name."""
    names: dict[str, str] = {}
    blocks = sorted({m.group(1) for w in model.weights if (m := re.match(r"(block\d+[a-z]+)_", w.path))},
                    key=lambda b: (int(re.match(r"block(\d+)", b).group(1)), len(b), b))  # fmt: skip
    for k, block in enumerate(blocks):
        roles = {
            w.path.split("/")[0].removeprefix(block + "_") for w in model.weights if w.path.startswith(block + "_")
        }
        expand = "expand_conv" in roles
        depthwise = "dwconv2" in roles
        layer_names = {"expand_conv": "conv2d", "expand_bn": "tpu_batch_normalization",
                       "dwconv2": "depthwise_conv2d", "se_reduce": "se/conv2d", "se_expand": "se/conv2d_1",
                       "project_conv": "conv2d_1" if expand else "conv2d"}  # fmt: skip
        if depthwise:
            layer_names["bn"] = "tpu_batch_normalization_1"
            layer_names["project_bn"] = "tpu_batch_normalization_2"
        else:
            layer_names["project_bn"] = "tpu_batch_normalization_1" if expand else "tpu_batch_normalization"
        for role, official in layer_names.items():
            names[f"{block}_{role}"] = f"{scope}/blocks_{k}/{official}"
    names.update({"stem_conv": f"{scope}/stem/conv2d", "stem_bn": f"{scope}/stem/tpu_batch_normalization",
                  "top_conv": f"{scope}/head/conv2d", "top_bn": f"{scope}/head/tpu_batch_normalization",
                  "predictions": f"{scope}/head/dense"})  # fmt: skip
    mapping = {}
    for weight in model.weights:
        layer, variable = weight.path.split("/")
        if variable == "kernel" and "dwconv2" in layer:
            variable = "depthwise_kernel"
        mapping[weight.path] = f"{names[layer]}/{variable}"
    return mapping


def randomised(values: list[np.ndarray], paths: list[str], rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for value, path in zip(values, paths, strict=True):
        # gammas below 1 keep activations of order 1 through the deeper variants: with growing
        # activations float32 rounding alone would drift beyond the 1e-4 the logits must meet
        if path.endswith("gamma"):
            value = rng.uniform(0.3, 0.6, value.shape)
        elif path.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, value.shape)
        elif path.endswith(("beta", "moving_mean", "bias")):
            value = rng.normal(0.0, 0.1, value.shape)
        out.append(value.astype(np.float32))
    return out


def save(prefix: Path, tensors: dict[str, np.ndarray]) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
        tensors=[tf.constant(tensors[n]) for n in names],
    )  # fmt: skip


def main(variant: str, out: Path) -> None:
    model = getattr(keras.applications, MODELS[variant])(
        include_top=True, weights=None, input_shape=(64, 64, 3), include_preprocessing=False,
        classifier_activation=None,
    )  # fmt: skip
    scope = f"efficientnetv2-{variant}"
    rng = np.random.default_rng(0)
    paths = [w.path for w in model.weights]
    raw = randomised([w.numpy() for w in model.weights], paths, rng)
    ema = [v * rng.uniform(0.9, 1.1, v.shape).astype(np.float32) for v in raw]
    mapping = official_names(model, scope)
    images = rng.uniform(-1.0, 1.0, (2, 64, 64, 3)).astype(np.float32)
    logits = {}
    for kind, values in (("raw", raw), ("ema", ema)):
        model.set_weights(values)
        logits[kind] = model(images, training=False).numpy()
    tensors = {mapping[p]: v for p, v in zip(paths, raw, strict=True)}
    tensors.update({mapping[p] + EMA: v for p, v in zip(paths, ema, strict=True)})
    tensors["global_step"] = np.array(1234, np.int64)
    first_kernel = mapping[paths[0]]
    tensors[first_kernel + "/RMSProp"] = np.ones_like(raw[0])
    save(out / "official" / "model", tensors)
    np.save(out / "images.npy", images.transpose(0, 3, 1, 2))
    np.save(out / "logits_raw.npy", logits["raw"])
    np.save(out / "logits_ema.npy", logits["ema"])
    # broken copies for the error tests: one tensor gone, one too many, one of the wrong shape
    dropped = f"{scope}/blocks_5/se/conv2d/kernel"
    save(out / "missing" / "model", {k: v for k, v in tensors.items() if not k.startswith(dropped)})
    save(out / "extra" / "model", {**tensors, f"{scope}/head/extra/kernel": np.zeros(3, np.float32)})
    reshaped = {**tensors, f"{scope}/head/dense/bias" + EMA: np.zeros(7, np.float32)}
    save(out / "mismatch" / "model", reshaped)
    save(out / "no_ema" / "model", {k: v for k, v in tensors.items() if not k.endswith(EMA)})


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
