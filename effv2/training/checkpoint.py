"""Checkpoint files: written atomically, loaded strictly with every mismatch listed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mindspore as ms
from mindspore import nn

from effv2.errors import UserError


def save_atomic(net: nn.Cell, path: Path, metadata: dict[str, Any]) -> None:
    """Write to a temporary file beside ``path`` and rename, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.ckpt")
    try:
        ms.save_checkpoint(net, str(tmp), append_dict={"effv2_meta": json.dumps(metadata)})
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_checkpoint(path: str | Path) -> tuple[dict, dict[str, Any]]:
    """(parameters, metadata) of a checkpoint file, with one-line errors for bad paths."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt={str(path)!r} does not exist or is not a file")
    try:
        params = ms.load_checkpoint(str(path))
    except (ValueError, RuntimeError, TypeError) as exc:
        raise UserError(f"ckpt={str(path)!r} is not a MindSpore checkpoint ({str(exc).splitlines()[0]})") from None
    meta = params.pop("effv2_meta", None)
    return params, json.loads(str(meta)) if meta is not None else {}


def load_weights(net: nn.Cell, path: str | Path) -> dict[str, Any]:
    """Load every parameter of ``net`` from ``path``; refuse missing, unexpected or mis-shaped ones."""
    params, meta = read_checkpoint(path)
    expected = {p.name: p for p in net.get_parameters()}
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    mismatched = [
        f"{name} {tuple(params[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in sorted(set(expected) & set(params))
        if tuple(params[name].shape) != tuple(expected[name].shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise UserError(
            f"ckpt={str(path)!r} does not fit model {net.spec.name}/{net.num_classes} classes: " + "; ".join(problems)
        )
    ms.load_param_into_net(net, params, strict_load=True)
    return meta
