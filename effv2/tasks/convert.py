"""task=convert: an official TensorFlow checkpoint or a timm state dict into an effv2 checkpoint;
returns the number of tensors converted."""

from __future__ import annotations

from pathlib import Path

from effv2.config.schema import RunConfig
from effv2.conversion.convert import convert
from effv2.errors import UserError


def run(cfg: RunConfig, run_dir: Path) -> float:
    if not cfg.convert.source:
        raise UserError("task=convert needs convert.source=<TF checkpoint prefix, .safetensors or .pth file>")
    variant = cfg.model.name
    output = Path(cfg.convert.output).expanduser() if cfg.convert.output else run_dir / f"{variant}.ckpt"
    report = convert(cfg.convert.source, variant, cfg.convert.weights.name == "ema", output)
    return float(report["tensors"])
