"""The sweep summary of a multirun: one row per job, written into the sweep folder.

Every job leaves ``job.json`` in its folder (written by :class:`SweepSummary` when the job ends,
in whatever process or node ran it); at the end of the multirun the rows are collected from
the folders, so the summary is the same for the basic, joblib, SLURM and Optuna paths. A job
folder without ``job.json`` (its process died) counts as failed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from effv2.config.schema import choice_name
from effv2.launch import slurm
from effv2.tracking.epoch_log import EpochLog

log = logging.getLogger(__name__)

JOB_RECORD = "job.json"
ERROR_FILE = "error.txt"  # written by run.py when a job of a multirun fails
COLUMNS = ("job", "status", "overrides", "best", "final_val_top1", "wall_s", "images_per_s", "epochs", "error")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _throughput(rows: list[dict[str, str]]) -> float | None:
    """Training images per second over the whole run: images over seconds, summed over epochs."""
    seconds = images = 0.0
    for row in rows:
        if row.get("images_per_s") and row.get("seconds"):
            rate, spent = float(row["images_per_s"]), float(row["seconds"])
            images += rate * spent
            seconds += spent
    return images / seconds if seconds else None


def _job_row(job_dir: Path, best_key: str) -> dict[str, Any]:
    record = _read_json(job_dir / JOB_RECORD)
    overrides = record.get("overrides")
    if overrides is None:
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    metrics = _read_json(job_dir / "metrics.json")
    rows = EpochLog(job_dir / "metrics.csv").rows()
    error = record.get("error") or ""
    if (job_dir / ERROR_FILE).is_file():
        error = (job_dir / ERROR_FILE).read_text().strip().splitlines()[0]
    status = record.get("status", "failed")
    if not record:
        error = error or "the job ended without a job record (killed or crashed)"
    if error:
        status = "failed"
    return {
        "job": record.get("job", job_dir.name),
        "status": status,
        "overrides": list(overrides),
        "best": metrics.get(f"best_{best_key}"),
        "final_val_top1": metrics.get("val_top1"),
        "wall_s": record.get("wall_s"),
        "images_per_s": _throughput(rows),
        "epochs": len(rows),
        "error": error,
        "_curve": rows,
    }


def _varying(rows: list[dict[str, Any]]) -> None:
    """Keep in each row only the overrides that differ between jobs: the swept ones."""
    common = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    for row in rows:
        row["overrides"] = " ".join(o for o in row["overrides"] if o not in common)


def _sort_key(row: dict[str, Any]) -> tuple:
    best = row["best"]
    ranked = row["status"] == "completed" and isinstance(best, (int, float)) and math.isfinite(best)
    return (not ranked, -best if ranked else 0.0, str(row["job"]))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


def collect(sweep_dir: Path, best_key: str) -> list[dict[str, Any]]:
    """Rows of every job folder under ``sweep_dir``, best first, failed jobs last."""
    # a job SLURM cancelled before it started has only the record the launcher wrote
    job_dirs = [d for d in sorted(Path(sweep_dir).iterdir()) if (d / ".hydra").is_dir() or (d / JOB_RECORD).is_file()]
    rows = [_job_row(d, best_key) for d in job_dirs]
    if rows:
        _varying(rows)
    return sorted(rows, key=_sort_key)


def write_summary(sweep_dir: Path, best_key: str) -> list[dict[str, Any]]:
    """summary.csv, summary.md and summary.png in ``sweep_dir``; returns the rows."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir, best_key)
    header = [c if c != "best" else f"best_{best_key}" for c in COLUMNS]
    tmp = sweep_dir / ".summary.csv.tmp"
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    os.replace(tmp, sweep_dir / "summary.csv")
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"{len(rows)} jobs, sorted by {header[3]} (best first); failed jobs last.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [_fmt(row[c]).replace("|", "\\|") for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    _plot(rows, sweep_dir / "summary.png")
    return rows


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    for row in rows:
        curve = [r for r in row["_curve"] if r.get("val_top1")]
        label = f"#{row['job']} {row['overrides']}".strip() + ("" if row["status"] == "completed" else " (failed)")
        if curve:
            axes[0].plot(
                [int(r["epoch"]) for r in curve], [float(r["val_top1"]) for r in curve], marker="o", label=label
            )
        losses = [r for r in row["_curve"] if r.get("train_loss")]
        if losses:
            axes[1].plot([int(r["epoch"]) for r in losses], [float(r["train_loss"]) for r in losses], label=label)
    axes[0].set_title("val top-1 (%)")
    axes[1].set_title("train loss")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    if any(row["_curve"] for row in rows):
        axes[0].legend(fontsize=7)
    figure.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(tmp, dpi=80)
    plt.close(figure)
    os.replace(tmp, path)


class SweepSummary(Callback):
    """Hydra callback (conf/config.yaml ``hydra.callbacks``): a job record per job, and the
    sweep summary when the multirun ends. A failed job makes the multirun exit with 1 after
    the summary is written, so scripts notice; the other jobs still ran."""

    def __init__(self) -> None:
        self._started: float | None = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        # one record per job: in a multi-node job node k > 0 runs the same job in the same folder
        if config.hydra.mode != RunMode.MULTIRUN or config.hardware.node_rank != 0:
            return
        output_dir = Path(config.hydra.runtime.output_dir)
        failed = job_return.status == JobStatus.FAILED
        value = job_return._return_value
        error = ""
        if failed:
            error = f"{type(value).__name__}: {value}"
        elif (output_dir / ERROR_FILE).is_file():
            error = (output_dir / ERROR_FILE).read_text().strip().splitlines()[0]
        record = {
            "job": config.hydra.job.num,
            "status": "failed" if failed or error else "completed",
            "overrides": list(job_return.overrides or []),
            "return_value": value if isinstance(value, (int, float)) and math.isfinite(value) else None,
            "wall_s": time.time() - self._started if self._started else None,
            "error": error,
            # the scheduler's job, where one ran it (hydra/launcher=slurm)
            "slurm_job_id": slurm.job_id(),
        }
        (output_dir / JOB_RECORD).write_text(json.dumps(record, indent=2) + "\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        best_key = choice_name(config.train.checkpoint.best_metric)
        rows = write_summary(sweep_dir, best_key)
        failed = [row for row in rows if row["status"] != "completed"]
        log.info("sweep summary of %d jobs: %s", len(rows), sweep_dir / "summary.md")
        if failed:
            jobs = ", ".join(f"#{row['job']} ({row['error']})" for row in failed)
            log.error("error: %d of %d jobs failed: %s; see %s", len(failed), len(rows), jobs, sweep_dir / "summary.md")
            sys.exit(1)
