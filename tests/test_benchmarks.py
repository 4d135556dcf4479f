"""Benchmarks are not timed tests: each runs in a tiny configuration and writes valid JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, tiny_data


def test_inference_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "inference.json"
    subprocess.run(
        [sys.executable, "benchmarks/bench_inference.py", "--variant", "effnetv2_b0", "--size", "32",
         "--batches", "1,2", "--repeats", "2", "--out", str(out)],
        cwd=REPO, check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    payload = json.loads(out.read_text())
    assert {(r["batch"], r["backend"]) for r in payload["results"]} == {
        (b, name) for b in (1, 2) for name in ("mindspore_graph", "mindir", "onnxruntime", "pytorch_eager")
    }
    assert all(r["median_s"] > 0 and r["images_per_s"] > 0 for r in payload["results"])
    assert out.with_suffix(".md").read_text().startswith("| batch |")


def test_progressive_benchmark_runs_and_writes_json(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "progressive.json"
    subprocess.run(
        [sys.executable, "benchmarks/bench_progressive.py", "--size", "32", "--epochs", "2", "--stages", "2",
         "--out", str(out), "--", *tiny_data(tiny_folder)],
        cwd=REPO, check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    payload = json.loads(out.read_text())
    fixed, progressive = payload["results"]["fixed"], payload["results"]["progressive"]
    assert [s["image_size"] for s in fixed["stages"]] == [32]
    assert [(s["image_size"], s["epochs"]) for s in progressive["stages"]] == [(16, 1), (32, 1)]
    assert payload["progressive_over_fixed_wall"] == progressive["wall_s"] / fixed["wall_s"] > 0
    assert out.with_suffix(".md").read_text().startswith("| run |")


def test_train_benchmark_runs_both_frameworks_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    subprocess.run(
        [sys.executable, "benchmarks/bench_train.py", "--variants", "effnetv2_b0", "--sizes", "32", "--batch", "2",
         "--repeats", "2", "--out", str(out)],
        cwd=REPO, check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    rows = json.loads(out.read_text())["results"]
    assert {r["framework"] for r in rows} == {"mindspore", "pytorch"}
    for row in rows:
        assert row["step_median_s"] > 0 and row["images_per_s"] > 0 and row["peak_rss_mb"] > 100
    mindspore = next(r for r in rows if r["framework"] == "mindspore")
    assert mindspore["compile_s"] > 0 and mindspore["ratio_to_pytorch"] > 0


def test_data_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "data.json"
    subprocess.run(
        [sys.executable, "benchmarks/bench_data.py", "--sizes", "32", "--per-class", "4", "--batch", "8",
         "--source-size", "64", "--out", str(out)],
        cwd=REPO, check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    (row,) = json.loads(out.read_text())["results"]
    assert row["pipeline_images_per_s"] > 0 and row["training_images_per_s"] > 0
    assert 0.0 <= row["data_wait"] < 1.0
    assert row["headroom"] == row["pipeline_images_per_s"] / row["training_images_per_s"]
