"""task=convert: an official TensorFlow checkpoint, a timm state dict or a seed (ModelZoo) .ckpt
into an effv2 checkpoint; returns the number of tensors converted."""

from __future__ import annotations

from pathlib import Path

from effv2.config.schema import RunConfig
from effv2.conversion.convert import convert
from effv2.errors import UserError
from effv2.storage.fetch import publish
from effv2.storage.location import is_remote, join, local_path


def run(cfg: RunConfig, run_dir: Path) -> float:
    if not cfg.convert.source:
        raise UserError(
            "task=convert needs convert.source=<TF checkpoint prefix, timm .safetensors / .pth, or seed .ckpt file>"
        )
    variant = cfg.model.name
    target = cfg.convert.output
    if is_remote(target):  # written into the run folder, then uploaded with its report
        output = run_dir / target.rstrip("/").rsplit("/", 1)[-1]
    else:
        output = local_path(target) if target else run_dir / f"{variant}.ckpt"
    report = convert(cfg.convert.source, variant, cfg.convert.weights.name == "ema", output)
    if is_remote(target):
        publish(output, target, "convert.output")
        report_url = join(target.rstrip("/").rsplit("/", 1)[0], output.with_suffix(".json").name)
        publish(output.with_suffix(".json"), report_url, "convert.output")
    return float(report["tensors"])
