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
        (b, name) for b in (1, 2) for name in ("mindspore_graph", "mindir", "onnxruntime")
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
