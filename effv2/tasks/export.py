"""task=export: write ``export.format`` of ``ckpt=`` with its parity report; returns the max abs
difference against the MindSpore graph."""

from __future__ import annotations

import logging
from pathlib import Path

from effv2.config.schema import RunConfig
from effv2.deploy.export import export_checkpoint
from effv2.deploy.exported import ExportedModel
from effv2.tracking.base import TaskResult
from effv2.tracking.task_run import record_task

log = logging.getLogger(__name__)


def run(cfg: RunConfig, run_dir: Path) -> float:
    exported = export_checkpoint(cfg, run_dir)
    report = exported.report
    diff = report.get("max_abs_diff")
    log.info(
        "exported %s (%s, %.1f MB, input %s%s, %s weights); %s",
        exported.path, report["format"], report["bytes"] / 1e6, list(exported.input_shape),
        " with any batch size" if exported.dynamic_batch else "", report["weights"],
        f"max abs diff vs MindSpore {diff:.3g}, top-1 agreement {report['top1_agreement']:.3f}"
        if diff is not None else "no parity check for AIR",
    )  # fmt: skip
    if not report.get("dynamic_batch") and "dynamic_batch_note" in report:
        log.info("fixed batch %d: %s", exported.batch_size, report["dynamic_batch_note"])
    quantization = report.get("quantization")
    if quantization:
        log.info(
            "INT8 on %d val images: top-1 %.2f (FP32 %.2f, drop %.2f, gate %.2f; %d images right only in FP32, "
            "%d only in INT8), top-5 %.2f (FP32 %.2f), top-1 agreement %.3f; batch %d latency %.1f ms (FP32 %.1f ms)",
            quantization["val_images"], quantization["int8"]["top1"], quantization["fp32"]["top1"],
            quantization["top1_drop"], quantization["max_top1_drop"], quantization["top1_lost"],
            quantization["top1_gained"], quantization["int8"]["top5"],
            quantization["fp32"]["top5"], quantization["top1_agreement"], quantization["latency_batch"],
            quantization["int8_latency_ms"], quantization["fp32_latency_ms"],
        )  # fmt: skip
    record_task(cfg, run_dir, export_result(exported, run_dir))
    return float(diff or 0.0)


def export_result(exported: ExportedModel, run_dir: Path) -> TaskResult:
    """The export's parity, file sizes and INT8 report for the loggers, its reports as artifacts."""
    report = exported.report
    metrics = {"bytes": float(report["bytes"])}
    for key in ("max_abs_diff", "top1_agreement"):
        if report.get(key) is not None:  # AIR has no parity check
            metrics[key] = float(report[key])
    quantization = report.get("quantization")
    if quantization:
        fp32 = Path(quantization["fp32_file"])
        metrics |= {
            "fp32_bytes": float(fp32.stat().st_size), "fp32_top1": quantization["fp32"]["top1"],
            "int8_top1": quantization["int8"]["top1"], "int8_top5": quantization["int8"]["top5"],
            "int8_top1_drop": quantization["top1_drop"], "int8_top1_agreement": quantization["top1_agreement"],
            "fp32_latency_ms": quantization["fp32_latency_ms"], "int8_latency_ms": quantization["int8_latency_ms"],
        }  # fmt: skip
    params = {key: str(report[key]) for key in ("format", "file", "checkpoint", "weights", "dynamic_batch")}
    if quantization:
        params |= {"int8_scheme": quantization["scheme"], "calibration": quantization["calibration_method"]}
    return TaskResult("export", metrics, params, sorted(run_dir.glob("*.export.json")))
