"""Benchmarks are not timed tests: each runs in a tiny configuration and writes valid JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, tiny_data
from effv2.kernels.build import onednn_flags


def _bench(script: str, out: Path, *args: str) -> dict:
    """Run ``benchmarks/<script>`` with ``args`` and return the JSON it wrote to ``out``."""
    command = [sys.executable, f"benchmarks/{script}", "--out", str(out), *args]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.read_text())


def test_inference_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "inference.json"
    payload = _bench("bench_inference.py", out, "--variant", "effnetv2_micro", "--size", "32", "--batches", "1,2",
                     "--repeats", "2")  # fmt: skip
    backends = ("mindspore_graph", "mindir", "onnxruntime", "onnxruntime_int8", "onnxruntime_int8_per_tensor",
                "pytorch_eager")  # fmt: skip
    assert {(r["batch"], r["backend"]) for r in payload["results"]} == {(b, name) for b in (1, 2) for name in backends}
    assert all(r["median_s"] > 0 and r["images_per_s"] > 0 for r in payload["results"])
    quality = payload["int8_quality"]
    assert quality["val_images"] == 359 and quality["calibration_images"] == 64
    assert [row["backend"] for row in quality["rows"]] == ["onnxruntime", *backends[3:5]]
    assert quality["rows"][0]["top1_agreement_with_fp32"] == 1.0 and quality["rows"][0]["max_abs_logit_diff"] == 0
    assert out.with_suffix(".md").read_text().startswith("| batch |")


def test_progressive_benchmark_runs_and_writes_json(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "progressive.json"
    payload = _bench("bench_progressive.py", out, "--size", "32", "--epochs", "2", "--stages", "2",
                     "--", *tiny_data(tiny_folder))  # fmt: skip
    fixed, progressive = payload["results"]["fixed"], payload["results"]["progressive"]
    assert [s["image_size"] for s in fixed["stages"]] == [32]
    assert [(s["image_size"], s["epochs"]) for s in progressive["stages"]] == [(16, 1), (32, 1)]
    assert payload["progressive_over_fixed_wall"] == progressive["wall_s"] / fixed["wall_s"] > 0
    assert out.with_suffix(".md").read_text().startswith("| run |")


def test_train_benchmark_runs_both_frameworks_and_writes_json(tmp_path: Path) -> None:
    rows = _bench("bench_train.py", tmp_path / "train.json", "--variants", "effnetv2_micro", "--sizes", "32",
                  "--batch", "2", "--repeats", "2")["results"]  # fmt: skip
    # by default MindSpore twice: on its own operators (hardware.cpu_kernels=false) and as the product runs
    assert [r["framework"] for r in rows] == ["mindspore", "mindspore + cpu_kernels", "pytorch"]
    for row in rows:
        assert row["step_median_s"] > 0 and row["images_per_s"] > 0 and row["peak_rss_mb"] > 100
    mindspore = next(r for r in rows if r["framework"] == "mindspore")
    assert mindspore["compile_s"] > 0 and mindspore["ratio_to_pytorch"] > 0


def test_data_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    payload = _bench("bench_data.py", tmp_path / "data.json", "--sizes", "48", "--magnitudes", "15", "--images", "50",
                     "--scaling-size", "48")  # fmt: skip
    (row,) = payload["per_core"]
    assert row["effv2"] > 0 and row["mindspore"] > 0 and row["ratio"] == row["effv2"] / row["mindspore"]
    kinds = [(s["pipeline"], s["worker_kind"]) for s in payload["scaling"]]
    assert kinds == [("effv2", "thread"), ("effv2", "process"), ("mindspore", "thread")]
    process = payload["scaling"][1]
    assert len(process["worker_rss_mib_2"]) >= 2 and all(m > 0 for m in process["worker_rss_mib_2"])
    cores = payload["cores_for_8_devices"]
    assert [c["per_device_images_per_s"] for c in cores] == [500, 1000, 2000]
    assert cores[1]["effv2_cores"] == 8 * 1000 / row["effv2"]
    assert 0.0 < payload["gil"]["gil_held_share"] < 1.0 and payload["cpu"]


def test_open_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    payload = _bench("bench_open.py", tmp_path / "open.json", "--counts", "1500", "--photos", "40", "--repeats", "1")
    times = payload["opens"]["1500"]
    assert all(times[k] > 0 for k in ("scandir_names", "first_open", "reopen_listing", "reopen_manifest"))
    assert payload["manifest_1p28m"]["arrays_mib"] > 50 and payload["index_reads"]["images"] == 40
    assert payload["index_reads"]["mindrecord_rows_per_s"] > 0 and payload["old_upfront_check_ms_per_image"] > 0


def test_levers_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    row, sigmoid_mul = _bench("bench_levers.py", tmp_path / "levers.json", "--size", "32", "--batch", "2",
                              "--repeats", "2", "--only", "stock,SiLU: Sigmoid", "--variant",
                              "effnetv2_micro")["results"]  # fmt: skip
    assert row["setting"].startswith("stock: hardware.cpu_kernels=false") and row["ratio_to_stock"] == 1.0
    assert row["step_median_s"] > 0 and row["first_step_s"] > row["step_median_s"]
    assert sigmoid_mul["setting"].startswith("SiLU: Sigmoid x Mul") and sigmoid_mul["step_median_s"] > 0


def test_kernels_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    payload = _bench("bench_kernels.py", tmp_path / "kernels.json", "--shapes", "8x4,16x8", "--repeats", "2")
    rows = payload["results"]
    assert [(r["op"], r["implementation"]) for r in rows[:12]] == [
        ("SiLU", "ops.silu (MindSpore)"), ("SiLU", "Sigmoid x Mul (MindSpore)"), ("SiLU", "fused AOT kernel (effv2)"),
        ("SE squeeze", "ReduceMean (MindSpore)"), ("SE squeeze", "fused AOT kernel (effv2)"),
        ("SE gate", "Sigmoid x broadcast Mul (MindSpore)"), ("SE gate", "fused AOT kernel (effv2)"),
        ("BN + SiLU", "BatchNorm + ops.silu (MindSpore)"), ("BN + SiLU", "BatchNorm + fused SiLU"),
        ("BN + SiLU", "fused AOT kernels (effv2)"),
        ("BN", "BatchNorm (MindSpore)"), ("BN", "fused AOT kernels (effv2)"),
    ]  # fmt: skip
    assert len(rows) == 24 and all(r["median_s"] > 0 for r in rows)
    mindspore = ("ops.silu (MindSpore)", "ReduceMean (MindSpore)", "Sigmoid x broadcast Mul (MindSpore)",
                 "BatchNorm + ops.silu (MindSpore)", "BatchNorm (MindSpore)")  # fmt: skip
    assert [r["ratio_to_mindspore"] for r in rows if r["implementation"] in mindspore] == [1.0] * 10


@pytest.mark.skipif(onednn_flags() is None, reason="no oneDNN headers (onednn-devel-cpu-gomp, in the base install)")
def test_conv_benchmark_measures_every_layer_shape_of_a_kind(tmp_path: Path) -> None:
    payload = _bench("bench_conv.py", tmp_path / "conv.json", "--variant", "effnetv2_micro", "--size", "32",
                     "--batch", "2", "--repeats", "2", "--kinds", "depthwise")  # fmt: skip
    rows = payload["results"]  # the micro network at 32 px: MBConv blocks at 8 px (stride 2) and 4 px (stride 1)
    assert [(r["kind"], r["in"], r["stride"], r["size"], r["layers"]) for r in rows] == [
        ("depthwise", 96, 2, 8, 1), ("depthwise", 128, 1, 4, 1),
    ]  # fmt: skip
    assert all(r["mindspore_s"] > 0 and r["onednn_s"] > 0 for r in rows)
    assert payload["per_kind"]["depthwise"]["layers"] == 2


def test_profile_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    payload = _bench("profile_train_step.py", tmp_path / "profile.json", "--size", "32", "--batch", "2", "--steps", "2",
                     "--variant", "effnetv2_micro")  # fmt: skip
    assert payload["mindspore_step_ms"] > 0 and payload["pytorch_step_ms"] > 0
    assert 0 < payload["convolution_ms"] < payload["profiled_ops_ms"]
    assert {"Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"} <= {op["op"] for op in payload["ops"]}
