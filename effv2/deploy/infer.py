"""task=infer: top-k predictions (and top-1 / top-5 on a labelled ImageFolder) from an exported
model through onnxruntime, a MindSpore MINDIR GraphCell, or the Ascend 310 offline path."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from effv2.deploy.backends import input_batch, open_backend
from effv2.deploy.export import export_checkpoint
from effv2.deploy.inputs import InferInputs, Preprocess, collect_inputs
from effv2.deploy.offline import postprocess, preprocess, run_device
from effv2.errors import UserError
from effv2.launch.device import backend_available
from effv2.training.evaluate import topk_correct
from effv2.training.metrics import write_json

log = logging.getLogger(__name__)

_FORMAT_OF_BACKEND = {"onnxruntime": "onnx", "mindir": "mindir", "ascend310": "mindir"}


def _model_file(cfg: Any, run_dir: Path) -> Path:
    backend = cfg.infer.backend.name
    if cfg.infer.model:
        return Path(cfg.infer.model).expanduser()
    if not cfg.ckpt:
        raise UserError("task=infer needs infer.model=<exported .onnx/.mindir> or ckpt=<checkpoint> to export first")
    path, report = export_checkpoint(cfg, run_dir, _FORMAT_OF_BACKEND[backend])
    log.info("exported %s for inference (max abs diff vs MindSpore %.3g)", path, report["max_abs_diff"])
    return path


def _class_names(cfg: Any, model: Path) -> list[str]:
    if cfg.infer.class_names:
        source = Path(cfg.infer.class_names).expanduser()
        if not source.is_file():
            raise UserError(f"infer.class_names={str(source)!r} does not exist")
        return [line.strip() for line in source.read_text().splitlines() if line.strip()]
    beside = model.parent / f"{model.stem}.classes.json"
    return json.loads(beside.read_text()) if beside.is_file() else []


def _image_size(model: Path, cfg: Any) -> int:
    report = model.parent / f"{model.stem}.export.json"
    if report.is_file():
        return int(json.loads(report.read_text())["input_shape"][-1])
    return int(cfg.data.eval_size)


def _logits_online(backend: Any, batch: int, inputs: InferInputs, prepare: Preprocess) -> np.ndarray:
    outputs = []
    for start in range(0, len(inputs.files), batch):
        chunk = [prepare(path) for path in inputs.files[start : start + batch]]
        images = np.zeros((batch, *chunk[0].shape), np.float32)
        images[: len(chunk)] = np.stack(chunk)
        outputs.append(backend(images)[: len(chunk)])
    return np.concatenate(outputs)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _write_predictions(cfg: Any, run_dir: Path, inputs: InferInputs, logits: np.ndarray, names: list[str]) -> Path:
    probs = _softmax(logits.astype(np.float64))
    k = min(cfg.infer.top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1)[:, :k]
    records = [
        {
            "file": str(path),
            "top_k": [
                {"class": names[i] if i < len(names) else str(i), "index": int(i), "prob": float(probs[row, i])}
                for i in order[row]
            ],
        }
        for row, path in enumerate(inputs.files)
    ]
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


def run(cfg: Any, run_dir: Path) -> float:
    backend_name = cfg.infer.backend.name
    device = cfg.infer.offline_device.name
    if backend_name == "ascend310" and device != "CPU" and not backend_available(device):
        raise UserError(
            f"infer.backend=ascend310 runs the offline path on {device} devices; found none on this machine "
            "(infer.offline_device=CPU lets this machine stand in for the device)"
        )
    model = _model_file(cfg, run_dir)
    names = _class_names(cfg, model)
    inputs = collect_inputs(cfg.infer.input, names, cfg.data.on_bad_image.name)
    prepare = Preprocess(cfg.data, _image_size(model, cfg))
    batch = input_batch(model) if model.is_file() else 1
    if backend_name == "ascend310":
        if model.suffix != ".mindir":
            raise UserError(f"infer.backend=ascend310 runs .mindir files; got {model.name}")
        offline = run_dir / "offline"
        bin_names = preprocess(inputs.files, prepare, offline / "input")
        shape = json.loads((model.parent / f"{model.stem}.export.json").read_text())["input_shape"]
        run_device(model, offline / "input", offline / "output", device, shape)
        logits = postprocess(offline / "output", bin_names, cfg.model.num_classes)
    else:
        backend = open_backend(backend_name, model, cfg.infer.provider.name)
        logits = _logits_online(backend, batch, inputs, prepare)
    out = _write_predictions(cfg, run_dir, inputs, logits, names)
    summary: dict[str, Any] = {"backend": backend_name, "model": str(model), "images": len(inputs.files)}
    if inputs.labels is not None:
        labels = np.asarray(inputs.labels)
        summary["top1"] = 100.0 * topk_correct(logits, labels, 1) / len(labels)
        summary["top5"] = 100.0 * topk_correct(logits, labels, 5) / len(labels)
    write_json(run_dir / "metrics.json", summary)
    log.info(
        "infer %s on %d images with %s%s; predictions in %s",
        model.name, len(inputs.files), backend_name,
        f": top-1 {summary['top1']:.2f}  top-5 {summary['top5']:.2f}" if "top1" in summary else "", out,
    )  # fmt: skip
    return float(summary.get("top1", 0.0))
