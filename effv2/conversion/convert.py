"""task=convert: an official TensorFlow checkpoint, a timm ``tf_efficientnetv2_*`` state dict or
a seed (MindSpore ModelZoo) ``.ckpt`` -> an effv2 MindSpore checkpoint plus a JSON report. Every
tensor is accounted for: missing, unexpected and shape-mismatched ones are listed and nothing is
written."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from effv2.checkpoints import BOOKKEEPING, mismatch_listing, model_entries, read_checkpoint, save_atomic
from effv2.conversion.names import Source, official_tf_names, seed_names, timm_names
from effv2.conversion.seed import is_seed_layout, require_seed_blocks, seed_model_tensors
from effv2.conversion.tensor_bundle import TensorBundle
from effv2.errors import UserError
from effv2.models import EfficientNetV2, get_variant

log = logging.getLogger(__name__)

EMA_SUFFIX = "/ExponentialMovingAverage"
# optimizer slots and counters that released TensorFlow checkpoints may carry beside the model
_TF_IGNORED_SUFFIXES = ("/RMSProp", "/RMSProp_1", "/Momentum", "/Adam", "/Adam_1")
_TIMM_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def official_scope(variant: str) -> str:
    """effnetv2_s -> efficientnetv2-s, the variable scope of the official checkpoints."""
    return "efficientnetv2-" + variant.removeprefix("effnetv2_")


class _Reader:
    """Named numpy tensors of one source, with the names that count as unexpected leftovers."""

    def __init__(self, names: set[str], read: Callable[[str], np.ndarray], shape: Callable[[str], tuple]) -> None:
        self.names, self.read, self.shape = names, read, shape


def _tf_reader(source: str, variant: str, use_ema: bool) -> tuple[_Reader, dict[str, str], str]:
    bundle = TensorBundle(source)
    scopes = sorted({name.split("/")[0] for name in bundle.entries if name.startswith("efficientnetv2-")})
    scope = official_scope(variant)
    if scope not in scopes:
        found = ", ".join(scopes) or "no efficientnetv2-* variables"
        raise UserError(f"convert.source={source!r} holds {found}; model={variant} expects {scope}")
    model_names = {
        name for name in bundle.entries if name.startswith(scope + "/") and not name.endswith(_TF_IGNORED_SUFFIXES)
    }
    if use_ema and not any(name.endswith(EMA_SUFFIX) for name in model_names):
        raise UserError(f"convert.source={source!r} has no {EMA_SUFFIX.lstrip('/')} weights; use convert.weights=raw")
    reader = _Reader(model_names, bundle.read, bundle.shape)
    return reader, {"format": "tensorflow", "scope": scope}, EMA_SUFFIX if use_ema else ""


def _load_state_dict(path: Path, use_ema: bool) -> tuple[dict[str, np.ndarray], bool]:
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            return load_file(str(path)), False
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise UserError(f"convert.source={str(path)!r} is not a readable safetensors file ({exc})") from None
    try:
        import torch
    except ImportError:
        raise UserError(
            f"convert.source={str(path)!r} is a PyTorch file and needs torch (pip install torch); "
            "a .safetensors file needs nothing extra"
        ) from None
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"convert.source={str(path)!r} is not a readable PyTorch file ({exc})") from None
    used_ema = False
    if isinstance(loaded, dict) and use_ema and isinstance(loaded.get("state_dict_ema"), dict):
        loaded, used_ema = loaded["state_dict_ema"], True
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in loaded.items()}, used_ema


def _timm_reader(source: str, use_ema: bool) -> tuple[_Reader, dict[str, str], bool]:
    path = Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"convert.source={source!r} does not exist or is not a file")
    tensors, used_ema = _load_state_dict(path, use_ema)
    names = {name for name in tensors if not name.endswith("num_batches_tracked")}
    reader = _Reader(names, lambda name: np.asarray(tensors[name]), lambda name: tuple(tensors[name].shape))
    return reader, {"format": "timm"}, used_ema


def _seed_reader(source: str) -> tuple[_Reader, dict[str, Any]]:
    params, _ = read_checkpoint(source, key="convert.source")
    if not is_seed_layout(params):
        hint = " (an effv2 checkpoint: use it as ckpt= or model.pretrained=)" if "stem.conv.weight" in params else ""
        raise UserError(
            f"convert.source={source!r} is a MindSpore checkpoint without the seed's layout (no features.0.0.weight)"
            + hint
        )
    tensors, ignored = seed_model_tensors(params)
    reader = _Reader(set(tensors), lambda name: tensors[name].asnumpy(), lambda name: tuple(tensors[name].shape))
    return reader, {"format": "modelzoo", "training_state_ignored": ignored}


def _classes(reader: _Reader, classifier: Source, suffix: str, axis: int) -> int:
    name = classifier.name + suffix
    return int(reader.shape(name)[axis]) if name in reader.names else 1000


def convert(source: str, variant: str, use_ema: bool, output: Path) -> dict[str, Any]:
    """Convert ``source`` for ``variant`` into ``output`` (.ckpt) and ``<output>.json``."""
    get_variant(variant)
    is_timm = str(source).endswith(_TIMM_SUFFIXES)
    is_seed = str(source).endswith(".ckpt")
    if is_seed:
        reader, report = _seed_reader(source)
        suffix, mapping_for, used_ema = "", seed_names, False
        if use_ema:
            log.info("the seed's checkpoints hold no EMA copy of the weights: converting its weights")
        classes = _classes(reader, Source("classifier.weight"), "", axis=0)
        require_seed_blocks(EfficientNetV2(get_variant(variant), num_classes=classes), f"convert.source={source!r}")
    elif is_timm:
        reader, report, used_ema = _timm_reader(source, use_ema)
        suffix, mapping_for = "", timm_names
        classes = _classes(reader, Source("classifier.weight"), "", axis=0)
    else:
        reader, report, suffix = _tf_reader(source, variant, use_ema)
        used_ema = bool(suffix)

        def mapping_for(net: EfficientNetV2) -> dict[str, Source]:
            return official_tf_names(net, report["scope"])

        classes = _classes(reader, Source(f"{report['scope']}/head/dense/kernel"), suffix, axis=1)
    net = EfficientNetV2(get_variant(variant), num_classes=classes)
    params = {name: p for name, p in model_entries(net).items() if name not in BOOKKEEPING}
    mapping = mapping_for(net)
    assert set(mapping) == set(params), sorted(set(mapping) ^ set(params))

    missing, mismatched, values = [], [], {}
    for ours, src in mapping.items():
        name = src.name + suffix
        if name not in reader.names:
            missing.append(name)
            continue
        value = src.transform(reader.read(name))
        if tuple(value.shape) != tuple(params[ours].shape):
            mismatched.append(f"{name} {tuple(value.shape)} vs {ours} {tuple(params[ours].shape)}")
            continue
        values[ours] = value
    used = {src.name + suffix for src in mapping.values()}
    # the other copy of each tensor (raw beside EMA, or EMA beside raw) is expected, not unexpected
    tf = not (is_timm or is_seed)
    twins = {src.name + (EMA_SUFFIX if not suffix else "") for src in mapping.values()} if tf else set()
    unexpected = sorted(reader.names - used - twins)
    listing = mismatch_listing(missing, unexpected, mismatched)
    if listing:
        raise UserError(f"convert.source={source!r} does not fit {variant}: {listing}; nothing written")

    from mindspore import Tensor

    for ours, value in values.items():
        params[ours].set_data(Tensor(np.ascontiguousarray(value, dtype=np.float32)))
    report.update(
        variant=variant,
        num_classes=classes,
        tensors=len(values),
        weights="ema" if used_ema else "raw",
        source=str(Path(source).expanduser().resolve()) if not tf else str(Path(source).expanduser()),
        output=str(output),
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = {"variant": variant, "num_classes": classes, "converted": report}
    save_atomic(model_entries(net), output, meta)
    report_path = output.with_suffix(".json")
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    log.info(
        "converted %d tensors (%s weights) of %s into %s (%s, %d classes); report %s",
        len(values), report["weights"], source, output, variant, classes, report_path,
    )  # fmt: skip
    return report
