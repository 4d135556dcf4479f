"""Exact resume: a run killed with SIGKILL mid-epoch and resumed ends bit-identical to an
uninterrupted run, with random crops, flips and RandAugment on (CPU); the interrupted run and its
resumption transform images in 2 worker processes, the reference in threads."""

from __future__ import annotations

import csv
from pathlib import Path

import mindspore as ms
import numpy as np

from conftest import killed_after_first_recovery, resumable, run_cli


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(
    resumable_reference: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    reference = resumable_reference
    overrides = (*resumable(tiny_folder), "data.worker_kind=process", "hardware.num_workers=2")
    killed = killed_after_first_recovery(overrides, tmp_path / "killed", jitter_s=1.5)  # somewhere after it

    resumed = tmp_path / "resumed"
    result = run_cli(*overrides, f"resume={killed}", f"hydra.run.dir={resumed}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in (resumed / "run.log").read_text()

    expected = ms.load_checkpoint(str(reference / "checkpoints" / "last.ckpt"))
    actual = ms.load_checkpoint(str(resumed / "checkpoints" / "last.ckpt"))
    names = set(expected) - {"effv2_meta"}
    assert names == set(actual) - {"effv2_meta"}
    # weights, BN statistics, EMA, optimizer slots and step, loss scale, noise counter
    assert any(n.startswith("ema/") for n in names) and any(n.startswith("state/") for n in names)
    for name in sorted(names):
        np.testing.assert_array_equal(actual[name].asnumpy(), expected[name].asnumpy(), err_msg=name)
    reference_rows, resumed_rows = _rows(reference), _rows(resumed)
    assert [r["epoch"] for r in resumed_rows] == ["1", "2", "3"]
    for ref_row, row in zip(reference_rows, resumed_rows, strict=True):
        for key in ("lr", "train_loss", "val_top1", "ema_val_top1"):
            assert float(row[key]) == float(ref_row[key]), key


def test_resume_from_a_folder_without_checkpoints_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_cli(f"resume={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path / 'r'}")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() + result.stdout.splitlines() if "error:" in line]
    assert len(errors) == 1 and "holds no checkpoints/last.ckpt" in errors[0]
