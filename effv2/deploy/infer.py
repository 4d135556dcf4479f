"""Top-k predictions (and top-1 / top-5 on a labelled ImageFolder) from an exported model through
onnxruntime, a MindSpore MINDIR GraphCell, or the Ascend 310 offline path."""

from __future__ import annotations

import csv
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from effv2.config.schema import RunConfig
from effv2.deploy.export import export_checkpoint
from effv2.deploy.exported import ExportedModel
from effv2.deploy.inputs import InferInputs, collect_inputs
from effv2.deploy.offline import postprocess, preprocess, run_device
from effv2.deploy.predictor import Predictor, prepare_file, top_k_predictions, transform_for
from effv2.errors import UserError
from effv2.launch.device import backend_available
from effv2.metrics import topk_correct

log = logging.getLogger(__name__)

_FORMAT_OF_BACKEND = {"onnxruntime": "onnx", "mindir": "mindir", "ascend310": "mindir"}
_SUFFIX_OF_BACKEND = {"onnxruntime": ".onnx", "mindir": ".mindir"}


def _exported_model(cfg: RunConfig, run_dir: Path) -> ExportedModel:
    if cfg.infer.model:
        return ExportedModel.read(cfg.infer.model, image_size=cfg.data.eval_size)
    if not cfg.ckpt:
        raise UserError("task=infer needs infer.model=<exported .onnx/.mindir> or ckpt=<checkpoint> to export first")
    exported = export_checkpoint(cfg, run_dir, _FORMAT_OF_BACKEND[cfg.infer.backend.name])
    diff = exported.report["max_abs_diff"]
    log.info("exported %s for inference (max abs diff vs MindSpore %.3g)", exported.path, diff)
    return exported


def _class_names(cfg: RunConfig, exported: ExportedModel) -> list[str]:
    if cfg.infer.class_names:
        source = Path(cfg.infer.class_names).expanduser()
        if not source.is_file():
            raise UserError(f"infer.class_names={str(source)!r} does not exist")
        return [line.strip() for line in source.read_text().splitlines() if line.strip()]
    return exported.class_names


def _write_predictions(
    cfg: RunConfig, run_dir: Path, inputs: InferInputs, predictions: list[list[dict[str, Any]]]
) -> Path:
    records = [{"file": str(path), "top_k": top} for path, top in zip(inputs.files, predictions, strict=True)]
    if cfg.infer.output_format.name == "json":
        out = run_dir / "predictions.json"
        out.write_text(json.dumps(records, indent=1) + "\n")
    else:
        out = run_dir / "predictions.csv"
        with out.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "rank", "class", "index", "prob"])
            for record in records:
                for rank, guess in enumerate(record["top_k"], start=1):
                    writer.writerow([record["file"], rank, guess["class"], guess["index"], f"{guess['prob']:.6f}"])
    return out


def _print_predictions(files: list[Path], predictions: list[list[dict[str, Any]]], limit: int) -> None:
    """One console line per image, its top-k classes with their probabilities, for the first
    ``limit`` images (the task's summary line names the file that holds them all)."""
    for path, top in zip(files[:limit], predictions[:limit], strict=True):
        log.info("%s: %s", path, "  ".join(f"{guess['class']} {guess['prob']:.3f}" for guess in top))
    if len(files) > limit:
        more = len(files) - limit
        log.info("... and %d more %s (infer.print_limit=%d)", more, "image" if more == 1 else "images", limit)


def infer(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Predict ``infer.input`` and write the predictions into ``run_dir``; returns the summary
    (backend, model, images, the predictions file, top-1 / top-5 on labelled input)."""
    backend_name = cfg.infer.backend.name
    device = cfg.infer.offline_device.name
    if backend_name == "ascend310" and device != "CPU" and not backend_available(device):
        raise UserError(
            f"infer.backend=ascend310 runs the offline path on {device} devices; found none on this machine "
            "(infer.offline_device=CPU lets this machine stand in for the device)"
        )
    exported = _exported_model(cfg, run_dir)
    model = exported.path
    names = _class_names(cfg, exported)
    inputs = collect_inputs(cfg.infer.input, names, cfg.data.on_bad_image.name)
    if backend_name == "ascend310":
        if model.suffix != ".mindir":
            raise UserError(f"infer.backend=ascend310 runs .mindir files; got {model.name}")
        offline = run_dir / "offline"
        transform = transform_for(exported, cfg.data)
        bin_names = preprocess(inputs.files, partial(prepare_file, transform), offline / "input")
        run_device(model, offline / "input", offline / "output", device)
        logits = postprocess(offline / "output", bin_names, cfg.model.num_classes)
    else:
        expected = _SUFFIX_OF_BACKEND[backend_name]
        if model.suffix != expected:
            raise UserError(f"infer.backend={backend_name} reads {expected} files; got {model.name}")
        options = {"provider": cfg.infer.provider.name, "batch_size": cfg.infer.batch_size}
        predictor = Predictor.from_export(exported, class_names=names, data=cfg.data, **options)
        logits = predictor.logits(inputs.files)
    predictions = top_k_predictions(logits, names, cfg.infer.top_k)
    out = _write_predictions(cfg, run_dir, inputs, predictions)
    _print_predictions(inputs.files, predictions, cfg.infer.print_limit)
    summary: dict[str, Any] = {"backend": backend_name, "model": str(model), "images": len(inputs.files)}
    if inputs.labels is not None:
        labels = np.asarray(inputs.labels)
        summary["top1"] = 100.0 * topk_correct(logits, labels, 1) / len(labels)
        summary["top5"] = 100.0 * topk_correct(logits, labels, 5) / len(labels)
    summary["predictions"] = str(out)
    return summary
