"""Bad input gets one clear line and a non-zero exit; interruptions lose no work."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor

from conftest import ALL_LOGGERS, REPO, check_logged_history, mlflow_run_of, one_line_error, resumable, run_cli
from effv2 import checkpoints as checkpoint
from effv2.checkpoints import read_checkpoint, save_atomic
from effv2.errors import UserError


def _folder(tmp_path: Path, layout: dict[str, dict[str, int]]) -> Path:
    """<root>/<split>/<class>/ with N copies of a real digit image."""
    source = next(iter(sorted((Path(os.environ["EFFV2_CACHE"]) / "digits" / "val" / "1").iterdir())))
    root = tmp_path / "data"
    for split, classes in layout.items():
        for name, count in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                shutil.copy(source, folder / f"{i}.png")
    return root


@pytest.mark.usefixtures("digits_root")
@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing_root", "is not a directory"),
        ("missing_split", "split 'val' is missing"),
        ("empty_class", "holds no images"),
        ("no_class_folders", "has no class folders"),
    ],
)
def test_broken_data_folders_are_one_line(tmp_path: Path, case: str, expected: str) -> None:
    layouts = {
        "missing_split": {"train": {"a": 40, "b": 40}},
        "empty_class": {"train": {"a": 40, "b": 0}, "val": {"a": 2, "b": 2}},
        "no_class_folders": {"train": {}, "val": {}},
    }
    root = tmp_path / "absent" if case == "missing_root" else _folder(tmp_path, layouts[case])
    if case == "no_class_folders":
        (root / "train").mkdir(parents=True, exist_ok=True)
        (root / "val").mkdir(parents=True, exist_ok=True)
    result = run_cli("data=imagefolder", f"data.root={root}", "data.num_classes=2", f"hydra.run.dir={tmp_path / 'r'}")
    assert expected in one_line_error(result)


@pytest.mark.parametrize(
    "override,expected",
    [
        ("data.train_size=0", "data.train_size=0 must be a positive integer"),
        ("data.eval_size=-3", "data.eval_size=-3 must be a positive integer"),
        ("data.batch_size=0", "data.batch_size=0 must be a positive integer"),
        (
            "data.batch_size=5000",
            "data.batch_size=5000 x 1 devices x 1 accumulation = 5000 (the global batch: batch x devices x "
            "train.accumulation_steps) exceeds the 1438 training images",
        ),
        ("data.num_classes=7", "data.num_classes=7 but"),
        ("train.epochs=0", "train.epochs=0 must be a positive integer"),
        ("train.accumulation_steps=0", "train.accumulation_steps=0 must be a positive integer"),
        ("hardware.amp_level=O5", "hardware.amp_level='O5' is not one of O0, O1, O2, O3"),
        ("data.on_bad_image=maybe", "maybe"),
    ],
)
def test_bad_values_are_one_line(tmp_path: Path, override: str, expected: str) -> None:
    result = run_cli(override, f"hydra.run.dir={tmp_path / 'r'}")
    if override.startswith("data.on_bad_image"):  # an enum: composition rejects it, listing the choices
        assert result.returncode != 0 and "skip" in result.stderr and "error" in result.stderr
        return
    assert expected in one_line_error(result)


@pytest.mark.parametrize(
    "override,expected",
    [
        ("train.epochs=0", "train.epochs=0 must be a positive integer"),
        ("progressive.stages=0", "progressive.stages=0 must be a positive integer (1 turns it off)"),
        ("data.crop_pct=1.5", "data.crop_pct=1.5 must be in (0, 1]"),
        ("data.eval_batch_size=0", "data.eval_batch_size=0 must be a positive integer"),
    ],
)
def test_a_bad_value_on_two_ranks_fails_before_any_rank_starts(tmp_path: Path, override: str, expected: str) -> None:
    """effv2.config.validate runs in the launching process: no rank, no msrun, no MindSpore import
    per rank for a typo (the launcher makes ranks/ and logs "starting ranks" before msrun)."""
    run_dir = tmp_path / "r"
    result = run_cli("hardware=cpu_2p", override, f"hydra.run.dir={run_dir}")
    assert expected in one_line_error(result)
    assert not (run_dir / "ranks").exists()
    assert "starting ranks" not in (run_dir / "run.log").read_text()


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.ckpt"
    save_atomic({"w": Parameter(Tensor(np.full((3,), 1.0, np.float32)), name="w")}, target, {"epoch": 1})

    def full_disk(entries, name, **kwargs):
        Path(name).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)

    monkeypatch.setattr(checkpoint.ms, "save_checkpoint", full_disk)
    with pytest.raises(
        UserError,
        match=r"could not write checkpoint .*last\.ckpt \(No space left on device\); the previous one is intact",
    ):
        save_atomic({"w": Parameter(Tensor(np.full((3,), 2.0, np.float32)), name="w")}, target, {"epoch": 2})
    monkeypatch.undo()
    params, meta = read_checkpoint(target)
    assert meta == {"epoch": 1} and params["w"].asnumpy().tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_diverging_run_stops_with_the_step_number(tmp_path: Path) -> None:
    result = run_cli(
        "optimizer=sgd", "optimizer.lr=1e12", "train.clip_grad_norm=null", "train.epochs=1",
        f"hydra.run.dir={tmp_path / 'r'}",
    )  # fmt: skip
    line = one_line_error(result)
    assert "training loss became" in line and "at step" in line and "no checkpoint was written yet" in line


def test_sigterm_writes_a_recovery_checkpoint_and_resume_matches(
    resumable_reference: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """... and every logger closes cleanly, then continues its run on resume."""
    reference, overrides = resumable_reference, (*resumable(tiny_folder), *ALL_LOGGERS)
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(
        [sys.executable, "run.py", *overrides, f"hydra.run.dir={stopped}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (stopped / "checkpoints" / "recovery.ckpt").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1 and "SIGTERM received: stopped after step" in errors[0]
    assert f"resume command: python run.py {' '.join(overrides)} resume={stopped}" in errors[0]
    run_id, status = mlflow_run_of(stopped)
    assert status == "KILLED"
    result = run_cli(*overrides, f"resume={stopped}", f"hydra.run.dir={tmp_path / 'resumed'}")
    assert result.returncode == 0, result.stderr[-2000:]
    check_logged_history(tmp_path / "resumed", epochs=3, steps_per_epoch=10, run_id=run_id)
    expected = ms.load_checkpoint(str(reference / "checkpoints" / "last.ckpt"))
    actual = ms.load_checkpoint(str(tmp_path / "resumed" / "checkpoints" / "last.ckpt"))
    for name in set(expected) - {"effv2_meta"}:
        np.testing.assert_array_equal(actual[name].asnumpy(), expected[name].asnumpy(), err_msg=name)


def test_a_truncated_jpeg_is_detected(tmp_path: Path) -> None:
    from PIL import Image

    from effv2.data.bad_images import image_problem

    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    assert image_problem(np.fromfile(path, np.uint8)) is None
    path.write_bytes(path.read_bytes()[:-200])
    assert image_problem(np.fromfile(path, np.uint8)) == "truncated JPEG (no end-of-image marker)"


def test_resuming_purges_the_mlflow_metrics_a_killed_run_logged_after_its_checkpoint(tmp_path: Path) -> None:
    """A run killed after logging epoch metrics at step 20 but whose last checkpoint is step 7: the
    resumed run's store keeps only steps <= 7, and MLflow's latest value follows."""
    from mlflow.tracking import MlflowClient

    from effv2.tracking.mlflow_logger import purge_after

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("effv2")).info.run_id
    for step, value in ((5, 0.1), (7, 0.2), (10, 0.3), (20, 0.4)):
        client.log_metric(run_id, "val_top1", value, step=step)
    client.log_metric(run_id, "lr", 1.0, step=3)
    assert purge_after(tmp_path, run_id, 7) == 2
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_top1")] == [(5, 0.1), (7, 0.2)]
    assert client.get_run(run_id).data.metrics == {"val_top1": 0.2, "lr": 1.0}
    assert purge_after(tmp_path, run_id, 7) == 0
