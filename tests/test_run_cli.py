"""``python run.py`` end to end as real subprocesses: train, the run folder, eval, failures."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CONF_DIR, REPO, one_line_error, run_cli


def test_run_folder_holds_config_log_metrics_and_checkpoints(trained_run: tuple[Path, str]) -> None:
    run_dir, _ = trained_run
    composed = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert composed["train"]["epochs"] == 2 and composed["model"]["name"] == "effnetv2_b0"
    assert composed["train"]["ema"]["enabled"] is True
    assert (run_dir / ".hydra" / "overrides.yaml").exists()
    log_text = (run_dir / "run.log").read_text()
    assert "epoch 2/2" in log_text and "ONEDNN_MAX_CPU_ISA=AVX2" in log_text  # the cap MindSpore's convolutions need
    assert "CPU kernels off: hardware.cpu_kernels=false: MindSpore's own operators" in log_text
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        assert float(row["train_loss"]) > 0 and float(row["images_per_s"]) > 0 and float(row["seconds"]) > 0
        assert 0 <= float(row["val_top1"]) <= float(row["val_top5"]) <= 100
        assert 0 <= float(row["ema_val_top1"]) <= float(row["ema_val_top5"]) <= 100
    # cosine decay: the second epoch ends on a lower rate than the first
    assert float(rows[1]["lr"]) < float(rows[0]["lr"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert len(list((run_dir / "checkpoints" / "top").glob("epoch*.ckpt"))) == 2
    assert not (run_dir / "checkpoints" / "recovery.ckpt").exists()  # superseded by last.ckpt
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["val_top1"] == pytest.approx(float(rows[-1]["val_top1"]))
    assert final["best_val_top1"] == pytest.approx(max(float(r["val_top1"]) for r in rows))
    assert final["ema_val_top1"] == pytest.approx(float(rows[-1]["ema_val_top1"]))


def test_training_learns(trained_run: tuple[Path, str]) -> None:
    run_dir, _ = trained_run
    final = json.loads((run_dir / "metrics.json").read_text())
    # two short epochs from scratch already beat chance (10 %) by far, and the loss falls
    assert final["best_val_top1"] > 30.0
    with (run_dir / "metrics.csv").open() as handle:
        losses = [float(r["train_loss"]) for r in csv.DictReader(handle)]
    assert losses[1] < losses[0]


def test_run_ends_by_printing_folder_and_metrics(trained_run: tuple[Path, str]) -> None:
    run_dir, stdout = trained_run
    last = stdout.strip().splitlines()[-1]
    assert str(run_dir) in last and "val top-1" in last


def test_eval_reproduces_the_final_validation_accuracy(trained_run: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = trained_run
    final = json.loads((run_dir / "metrics.json").read_text())
    result = run_cli(
        "task=eval", "data.eval_size=32", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((tmp_path / "metrics.json").read_text())
    assert evaluated["images"] == 359  # every validation image, the partial last batch included
    # the checkpoint holds EMA weights, which eval prefers: they reproduce the EMA metrics
    assert evaluated["weights"] == "ema"
    assert evaluated["val_top1"] == pytest.approx(final["ema_val_top1"], abs=1e-9)
    assert evaluated["val_top5"] == pytest.approx(final["ema_val_top5"], abs=1e-9)


def test_eval_of_a_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(run_cli("task=eval", f"ckpt={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 'r'}"))
    assert "nope.ckpt" in line and "does not exist" in line


def test_eval_of_a_non_checkpoint_file_is_one_line(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_text("not a checkpoint")
    line = one_line_error(run_cli("task=eval", f"ckpt={bogus}", f"hydra.run.dir={tmp_path / 'r'}"))
    assert "bogus.ckpt" in line and "not a MindSpore checkpoint" in line


def test_eval_of_another_variant_lists_the_mismatch(trained_run: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = trained_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    line = one_line_error(run_cli("task=eval", "model=effnetv2_b1", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'r'}"))
    assert "does not fit model effnetv2_b1" in line and "missing" in line


def test_absent_gpu_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(run_cli("hardware=gpu_1p", f"hydra.run.dir={tmp_path / 'r'}"))
    assert "hardware=gpu_1p needs an NVIDIA GPU" in line and "found none" in line


def test_help_opens_with_the_tasks_and_lists_only_choosable_options(tmp_path: Path) -> None:
    """Hydra's help template with effv2's text: the tasks, every group of conf/ with exactly its
    options (the schemas the options extend are no choice), examples; then the config."""
    result = subprocess.run([sys.executable, "run.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert text.startswith("effv2: EfficientNetV2 image classification on MindSpore")
    tasks = text.split("== Tasks (task=...) ==\n", 1)[1].split("\n\n", 1)[0]
    assert [line.split()[0] for line in tasks.splitlines()] == ["train", "eval", "export", "infer", "convert"]
    groups = text.split("== Configuration groups (group=option) ==\n", 1)[1].split("\n\n", 1)[0]
    listed = dict(line.strip().split(": ", 1) for line in groups.splitlines())
    for folder in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"):
        assert listed.pop(folder.name) == ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))), folder.name
    assert set(listed) == {"hydra/launcher", "hydra/sweeper"} and "slurm" in listed["hydra/launcher"].split(", ")
    assert "base_" not in text and "schema" not in groups
    assert text.count("python run.py ") >= 3 and "\nmodel:\n  name: effnetv2_b0\n" in text  # examples, then the config
    # a schema is not an option of its group: Hydra names the real ones
    refused = run_cli("optimizer=base_rmsprop", f"hydra.run.dir={tmp_path}")
    assert refused.returncode != 0 and "Could not find 'optimizer/base_rmsprop'" in refused.stderr
