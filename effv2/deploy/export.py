"""Export a checkpoint to MINDIR / ONNX / AIR and verify the file against the MindSpore graph;
ONNX files get a free batch dimension (when parity proves the rewrite) and, on request, an INT8
sibling gated by its accuracy on the validation split."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor

from effv2.checkpoints import load_weights
from effv2.config.schema import RunConfig
from effv2.data.pipeline import open_split
from effv2.data.transforms import EvalTransform
from effv2.deploy.backends import Backend, open_backend
from effv2.deploy.dynamic_batch import make_batch_dynamic
from effv2.deploy.exported import ExportedModel
from effv2.deploy.predictor import Predictor, decodable_files, run_batched
from effv2.deploy.quantize import quantize_int8
from effv2.errors import UserError
from effv2.launch.device import backend_available
from effv2.metrics import topk_correct
from effv2.models import build_model

log = logging.getLogger(__name__)

SUFFIX = {"mindir": ".mindir", "onnx": ".onnx", "air": ".air"}
# an exported file agrees with the graph when max |difference| <= this x max(1, max |logit|)
PARITY_RELATIVE_TOLERANCE = 1e-4
LATENCY_REPEATS = 5
CALIBRATION_BATCH = 8


def _check(cfg: RunConfig, fmt: str) -> None:
    export = cfg.export
    if not cfg.ckpt:
        raise UserError(f"exporting needs ckpt=<path to a .ckpt file> (format {fmt})")
    if fmt == "air" and not backend_available("Ascend"):
        raise UserError(
            "export.format=air needs an Ascend device (MindSpore writes AIR only there); use mindir or onnx"
        )
    if export.quantize.name == "int8" and fmt != "onnx":
        raise UserError(f"export.quantize=int8 quantizes ONNX files; set export.format=onnx (got {fmt})")


def export_checkpoint(cfg: RunConfig, run_dir: Path, fmt: str | None = None) -> ExportedModel:
    """Export ``cfg.ckpt`` (EMA weights when present) into ``run_dir``, with its sidecars; with
    ``export.quantize=int8`` the INT8 file (the FP32 one stays beside it)."""
    fmt = fmt or cfg.export.format.name
    _check(cfg, fmt)
    size = cfg.export.image_size or cfg.data.eval_size
    batch = cfg.export.batch_size
    net = build_model(cfg.model, seed=cfg.seed)
    meta = load_weights(net, cfg.ckpt)
    net.set_train(False)
    shape = (batch, cfg.model.in_channels, size, size)
    path = run_dir / f"{cfg.model.name}{SUFFIX[fmt]}"
    ms.export(net, Tensor(np.zeros(shape, np.float32)), file_name=str(path.with_suffix("")), file_format=fmt.upper())
    report: dict[str, Any] = {
        "format": fmt,
        "file": str(path),
        "weights": meta["weights"],
        "checkpoint": str(Path(cfg.ckpt).expanduser().resolve()),
        "num_classes": cfg.model.num_classes,
        "preprocess": EvalTransform(cfg.data, size).settings(),
        "dynamic_batch": False,
    }
    if fmt == "onnx" and cfg.export.dynamic_batch:
        report.update(_try_dynamic_batch(net, path, shape, cfg))
    elif fmt != "air":
        report.update(_parity(net, open_backend(_backend_of(fmt), path), shape, [batch], cfg.export.parity_batches))
    report["bytes"] = path.stat().st_size
    exported = ExportedModel(path, shape, meta.get("class_names") or [], report)
    exported.write()
    if cfg.export.quantize.name == "int8":
        return _quantized(cfg, exported)
    return exported


def _backend_of(fmt: str) -> str:
    return "onnxruntime" if fmt == "onnx" else "mindir"


def _parity(net: Any, backend: Backend, shape: tuple, sizes: list[int], batches: int) -> dict[str, Any]:
    """Max abs difference and top-1 agreement between ``backend`` and the graph on seeded random
    inputs in [-1, 1] (the range of the (x - 127.5) / 127.5 preprocessing), at each batch size."""
    rng = np.random.default_rng(0)
    worst, agree, total, scale = 0.0, 0, 0, 1.0
    per_size: dict[str, float] = {}
    for _ in range(max(1, batches)):
        images = rng.uniform(-1.0, 1.0, (max(sizes), *shape[1:])).astype(np.float32)
        expected = run_batched(lambda chunk: net(Tensor(chunk)).asnumpy(), images, shape[0], pad=True)
        scale = max(scale, float(np.abs(expected).max()))
        for size in sizes:
            actual = backend(images[:size])
            diff = float(np.abs(actual - expected[:size]).max())
            per_size[str(size)] = max(per_size.get(str(size), 0.0), diff)
            worst = max(worst, diff)
            agree += topk_correct(actual, expected[:size].argmax(1), 1)
            total += size
    return {
        "max_abs_diff": worst,
        "top1_agreement": agree / total,
        "parity_inputs": total,
        "parity_batch_sizes": sizes,
        "max_abs_diff_per_batch_size": per_size,
        "parity_holds": worst <= PARITY_RELATIVE_TOLERANCE * scale,
    }


def _try_dynamic_batch(net: Any, path: Path, shape: tuple, cfg: RunConfig) -> dict[str, Any]:
    """Free the batch dimension of the ONNX file at ``path``; keep the rewrite only if parity
    holds at every batch size, else restore the fixed-batch file and say why."""
    batch = shape[0]
    fixed = path.read_bytes()
    reason = make_batch_dynamic(path, batch)
    if reason is None:
        sizes = sorted({*cfg.export.parity_batch_sizes, batch})
        try:
            parity = _parity(net, open_backend("onnxruntime", path), shape, sizes, cfg.export.parity_batches)
        except Exception as exc:  # onnxruntime refusing the rewritten graph is a finding, not a crash
            parity, reason = {}, f"onnxruntime could not run the rewritten graph: {str(exc).splitlines()[0]}"
        if parity.get("parity_holds"):
            return {**parity, "dynamic_batch": True}
        reason = reason or (
            f"parity did not hold after the rewrite (max abs diff {parity['max_abs_diff']:.3g} at batch sizes {sizes})"
        )
        path.write_bytes(fixed)
    log.warning("export: ONNX stays at batch %d: %s", batch, reason)
    parity = _parity(net, open_backend("onnxruntime", path), shape, [batch], cfg.export.parity_batches)
    return {**parity, "dynamic_batch": False, "dynamic_batch_note": reason}


def _batches(
    files: list[Path | str], predictor: Predictor, read: Callable[[Path | str], np.ndarray], policy: str
) -> list[np.ndarray]:
    """Preprocessed images in batches the file accepts: CALIBRATION_BATCH images (calibration
    holds one batch's intermediate tensors at a time), or a fixed-batch file's own batch (which
    drops the remainder beyond the first batch rather than calibrate on padding)."""
    step = CALIBRATION_BATCH if predictor.exported.dynamic_batch else predictor.batch_size
    images, kept = decodable_files(predictor.transform, files, read, policy)
    if not len(kept):
        raise UserError("none of the calibration images decodes; export.quantize=int8 needs some")
    if not predictor.exported.dynamic_batch:
        images = images[: max(step, len(images) // step * step)]
    return [images[start : start + step] for start in range(0, len(images), step)]


def _latency_ms(backend: Backend, images: np.ndarray) -> float:
    backend(images)  # warm-up
    times = []
    for _ in range(LATENCY_REPEATS):
        start = time.perf_counter()
        backend(images)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "top1": 100.0 * topk_correct(logits, labels, 1) / len(labels),
        "top5": 100.0 * topk_correct(logits, labels, 5) / len(labels),
    }


def _quantized(cfg: RunConfig, fp32: ExportedModel) -> ExportedModel:
    """The INT8 sibling of ``fp32``: calibrated, measured on every val image against FP32, gated."""
    export, data = cfg.export, cfg.data
    if data.format.name == "mindrecord":
        raise UserError(
            "export.quantize=int8 calibrates and measures on image files; with data.format=mindrecord give "
            "the ImageFolder the shards were packed from (data.format=folder data.root=<folder>)"
        )
    train, val = open_split(data, data.train_split), open_split(data, data.val_split)
    pick = np.random.default_rng(cfg.seed).permutation(train.num_images)[: export.calibration_images]
    fp32_predictor = Predictor.from_export(fp32, batch_size=cfg.infer.batch_size)
    int8_path = fp32.path.with_name(f"{fp32.path.stem}.int8.onnx")
    started = time.perf_counter()
    quantize_int8(
        fp32.path,
        int8_path,
        _batches([train.files[i] for i in sorted(pick)], fp32_predictor, train.read, data.on_bad_image.value),
        method=export.calibration_method.name,
        per_channel=export.per_channel,
        reduce_range=export.reduce_range,
        op_types=list(export.quantize_op_types),
    )
    seconds = time.perf_counter() - started
    int8 = ExportedModel(int8_path, fp32.input_shape, fp32.class_names, {**fp32.report, "file": str(int8_path)})
    int8_predictor = Predictor.from_export(int8, batch_size=cfg.infer.batch_size)
    fp32_rows, int8_rows, kept, first = [], [], [], None
    step = fp32_predictor.batch_size
    for start in range(0, val.num_images, step):  # each image decoded once, for both models
        pixels, positions = decodable_files(
            fp32_predictor.transform, val.files[start : start + step], val.read, data.on_bad_image.value
        )
        if not len(positions):
            continue
        kept.append(start + positions)
        first = pixels[:1] if first is None else first
        fp32_rows.append(fp32_predictor.run(pixels))
        int8_rows.append(int8_predictor.run(pixels))
    if first is None:
        raise UserError(f"no validation image of {val.path} decodes; export.quantize=int8 needs some")
    labels = np.asarray(val.labels)[np.concatenate(kept)]
    fp32_logits, int8_logits = np.concatenate(fp32_rows), np.concatenate(int8_rows)
    fp32_acc, int8_acc = _accuracy(fp32_logits, labels), _accuracy(int8_logits, labels)
    timing_input = np.repeat(first, fp32_predictor.batch_size, axis=0)
    fp32_top1, int8_top1 = fp32_logits.argmax(1), int8_logits.argmax(1)
    fp32_right, int8_right = fp32_top1 == labels, int8_top1 == labels
    quantization = {
        "scheme": "QDQ, int8 weights (7-bit with reduce_range), uint8 activations",
        "per_channel": export.per_channel,
        "reduce_range": export.reduce_range,
        "calibration_method": export.calibration_method.name,
        "calibration_images": int(len(pick)),
        "op_types": list(export.quantize_op_types) or "onnxruntime default",
        "seconds": seconds,
        "fp32_file": str(fp32.path),
        "val_images": len(labels),
        "fp32": fp32_acc,
        "int8": int8_acc,
        "top1_drop": fp32_acc["top1"] - int8_acc["top1"],
        "top1_agreement": float((fp32_top1 == int8_top1).mean()),
        # the drop is lost - gained images: on a small val split a point is a handful of them
        "top1_lost": int((fp32_right & ~int8_right).sum()),
        "top1_gained": int((int8_right & ~fp32_right).sum()),
        "latency_batch": int(len(timing_input)),
        "fp32_latency_ms": _latency_ms(fp32_predictor.backend, timing_input),
        "int8_latency_ms": _latency_ms(int8_predictor.backend, timing_input),
        "max_top1_drop": export.max_top1_drop,
    }
    int8.report.update({"bytes": int8_path.stat().st_size, "quantization": quantization})
    int8.write()
    if quantization["top1_drop"] > export.max_top1_drop:
        raise UserError(
            f"export.quantize=int8 loses {quantization['top1_drop']:.2f} top-1 points on {len(labels)} val images "
            f"(FP32 {fp32_acc['top1']:.2f} %, INT8 {int8_acc['top1']:.2f} %: {quantization['top1_lost']} images "
            f"right only in FP32, {quantization['top1_gained']} only in INT8) > export.max_top1_drop="
            f"{export.max_top1_drop}; both files and the report are in {int8_path.parent}"
        )
    return int8
