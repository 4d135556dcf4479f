"""Export a checkpoint to MINDIR / ONNX / AIR and verify the file against the MindSpore graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor

from effv2.config.schema import RunConfig
from effv2.deploy.backends import open_backend
from effv2.deploy.exported import ExportedModel
from effv2.errors import UserError
from effv2.launch.device import backend_available
from effv2.models import build_model
from effv2.training.checkpoint import load_weights
from effv2.training.evaluate import topk_correct

SUFFIX = {"mindir": ".mindir", "onnx": ".onnx", "air": ".air"}


def export_checkpoint(cfg: RunConfig, run_dir: Path, fmt: str | None = None) -> ExportedModel:
    """Export ``cfg.ckpt`` (EMA weights when present) into ``run_dir``, with its sidecars."""
    fmt = fmt or cfg.export.format.name
    if not cfg.ckpt:
        raise UserError(f"exporting needs ckpt=<path to a .ckpt file> (format {fmt})")
    if fmt == "air" and not backend_available("Ascend"):
        raise UserError(
            "export.format=air needs an Ascend device (MindSpore writes AIR only there); use mindir or onnx"
        )
    size = cfg.export.image_size or cfg.data.eval_size
    batch = cfg.export.batch_size
    if size <= 0 or batch <= 0:
        raise UserError(f"export.image_size={size} and export.batch_size={batch} must be positive")
    net = build_model(cfg.model, seed=cfg.seed)
    meta = load_weights(net, cfg.ckpt)
    net.set_train(False)
    shape = (batch, cfg.model.in_channels, size, size)
    path = run_dir / f"{cfg.model.name}{SUFFIX[fmt]}"
    ms.export(net, Tensor(np.zeros(shape, np.float32)), file_name=str(path.with_suffix("")), file_format=fmt.upper())
    report: dict[str, Any] = {
        "format": fmt,
        "file": str(path),
        "bytes": path.stat().st_size,
        "weights": meta["weights"],
        "checkpoint": str(Path(cfg.ckpt).expanduser().resolve()),
        "dynamic_batch": False,
        "note": "MindSpore 2.10 exports ONNX with a fixed batch only; export one file per batch size",
    }
    if fmt != "air":
        report.update(_parity(net, path, fmt, shape, cfg.export.parity_batches))
    exported = ExportedModel(path, shape, meta.get("class_names") or [], report)
    exported.write()
    return exported


def _parity(net: Any, path: Path, fmt: str, shape: tuple, batches: int) -> dict[str, Any]:
    """Max abs difference and top-1 agreement on seeded random inputs in the model's input range.

    Inputs are uniform in [-1, 1], the range the (x - 127.5) / 127.5 preprocessing produces."""
    backend = open_backend("onnxruntime" if fmt == "onnx" else "mindir", path)
    rng = np.random.default_rng(0)
    worst, agree, total = 0.0, 0, 0
    for _ in range(max(1, batches)):
        images = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
        expected = net(Tensor(images)).asnumpy()
        actual = backend(images)
        worst = max(worst, float(np.abs(actual - expected).max()))
        agree += topk_correct(actual, expected.argmax(1), 1)
        total += shape[0]
    return {"max_abs_diff": worst, "top1_agreement": agree / total, "parity_inputs": total}
