"""Export (ONNX, MINDIR) with parity reports, and inference through every backend, agreeing
with task=eval on the same checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import EVAL_32PX as SIZE
from conftest import one_line_error, run_cli


def _one_process(result, run_dir: Path) -> None:
    """A multi-device hardware option ran the task as one process: no launcher, no ranks."""
    assert "runs as one process on one CPU device of hardware=cpu_2p" in result.stdout + result.stderr
    assert not (run_dir / "ranks").exists()


# the ONNX export and onnxruntime inference run with a 2-device option: they are one process
@pytest.mark.parametrize("fmt,suffix,hardware", [("onnx", ".onnx", "cpu_2p"), ("mindir", ".mindir", "cpu")])
def test_export_writes_the_file_and_a_parity_report(
    best_ckpt: Path, tmp_path: Path, fmt: str, suffix: str, hardware: str
) -> None:
    result = run_cli(
        "task=export", f"export.format={fmt}", SIZE, f"ckpt={best_ckpt}", f"hardware={hardware}",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    if hardware == "cpu_2p":
        _one_process(result, tmp_path)
    exported = tmp_path / f"effnetv2_b0{suffix}"
    report = json.loads((tmp_path / "effnetv2_b0.export.json").read_text())
    assert exported.stat().st_size == report["bytes"] > 1_000_000
    assert report["format"] == fmt and report["input_shape"] == [1, 3, 32, 32]
    assert report["weights"] == "ema"  # the checkpoint carries EMA weights
    assert report["max_abs_diff"] < 1e-4 and report["top1_agreement"] == 1.0
    assert json.loads((tmp_path / "effnetv2_b0.classes.json").read_text()) == [str(d) for d in range(10)]


@pytest.mark.parametrize(
    "backend,extra",
    [("onnxruntime", ("hardware=cpu_2p",)), ("mindir", ()), ("ascend310", ("infer.offline_device=CPU",))],
)
def test_infer_on_the_val_folder_matches_eval(
    best_ckpt: Path, eval_top1: float, digits_root: Path, tmp_path: Path, backend: str, extra: tuple
) -> None:
    result = run_cli(
        "task=infer", f"infer.backend={backend}", *extra, SIZE, f"ckpt={best_ckpt}",
        f"infer.input={digits_root / 'val'}", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    if "hardware=cpu_2p" in extra:
        _one_process(result, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == 359
    assert metrics["top1"] == pytest.approx(eval_top1, abs=1e-9)
    if backend == "ascend310":  # the offline path left its .bin round trip in the run folder
        assert len(list((tmp_path / "offline" / "input").glob("*.bin"))) == 359
        assert len(list((tmp_path / "offline" / "output").glob("*_0.bin"))) == 359


def test_predict_single_images_names_the_class(best_ckpt: Path, digits_root: Path, tmp_path: Path) -> None:
    export_dir = tmp_path / "export"
    assert run_cli("task=export", SIZE, f"ckpt={best_ckpt}", f"hydra.run.dir={export_dir}").returncode == 0
    images = [sorted((digits_root / "val" / digit).iterdir())[0] for digit in ("0", "4", "7")]
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(map(str, images)) + "\n")
    run_dir = tmp_path / "predict"
    result = run_cli(
        "task=infer", SIZE, f"infer.model={export_dir / 'effnetv2_b0.onnx'}", f"infer.input={listing}",
        "infer.output_format=csv", "infer.top_k=3", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with (run_dir / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9
    firsts = [r for r in rows if r["rank"] == "1"]
    assert [r["class"] for r in firsts] == ["0", "4", "7"]
    assert all(0.0 <= float(r["prob"]) <= 1.0 for r in rows)
    assert all(float(r["prob"]) > 0.5 for r in firsts)
    single = tmp_path / "single"
    result = run_cli(
        "task=infer", SIZE, f"infer.model={export_dir / 'effnetv2_b0.onnx'}", f"infer.input={images[1]}",
        f"hydra.run.dir={single}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    prediction = json.loads((single / "predictions.json").read_text())[0]
    assert prediction["top_k"][0]["class"] == "4" and len(prediction["top_k"]) == 5


def test_air_without_ascend_is_one_line(best_ckpt: Path, tmp_path: Path) -> None:
    line = one_line_error(run_cli("task=export", "export.format=air", f"ckpt={best_ckpt}", f"hydra.run.dir={tmp_path}"))
    assert "export.format=air needs an Ascend device" in line


def test_cuda_provider_without_cuda_is_one_line(best_ckpt: Path, digits_root: Path, tmp_path: Path) -> None:
    result = run_cli(
        "task=infer", "infer.provider=cuda", SIZE, f"ckpt={best_ckpt}", f"infer.input={digits_root / 'val'}",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    line = one_line_error(result)
    assert "infer.provider=cuda needs onnxruntime's CUDAExecutionProvider" in line


def test_ascend310_without_a_device_is_one_line(best_ckpt: Path, digits_root: Path, tmp_path: Path) -> None:
    result = run_cli(
        "task=infer", "infer.backend=ascend310", f"ckpt={best_ckpt}", f"infer.input={digits_root / 'val'}",
        f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert "found none on this machine" in one_line_error(result)
