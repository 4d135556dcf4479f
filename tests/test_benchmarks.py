"""Benchmarks are not timed tests: each runs in a tiny configuration and writes valid JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO


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
