"""Progressive learning (stage tables, the stage loop, resume) and multirun sweeps with their
summary, through real Hydra composition and real ``run.py -m`` subprocesses."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF_DIR, run_cli, sigterm_once_logged, tiny_data
from effv2.config import register_configs
from effv2.config.validate import validate
from effv2.errors import UserError
from effv2.progressive import build_schedule
from effv2.step_plan import build_step_plan

register_configs()


def _schedule(*overrides: str) -> list[tuple]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    validate(cfg)  # what run.py checks before training; build_schedule trusts it
    return [
        (s.first_epoch, s.last_epoch, s.image_size, *(round(s[name], 4) for name in ("dropout", "randaug", "mixup")))
        for s in build_schedule(cfg, build_step_plan(cfg.train, 1, 1))  # one step per epoch
    ]


# hand-computed from SPEC section 3: S_i = S_0 + (S_e - S_0) * i / 3, sizes truncated, RandAugment
# magnitudes kept fractional (official level scale); stage k of 350 epochs starts after
# int(k / 4 * 350) epochs
PAPER_TABLES = {
    "effnetv2_s": [
        (1, 87, 128, 0.1, 5, 0.0),
        (88, 175, 185, 0.1667, 8.3333, 0.0),
        (176, 262, 242, 0.2333, 11.6667, 0.0),
        (263, 350, 300, 0.3, 15, 0.0),
    ],
    "effnetv2_m": [
        (1, 87, 128, 0.1, 5, 0.0),
        (88, 175, 212, 0.2, 10, 0.0667),
        (176, 262, 296, 0.3, 15, 0.1333),
        (263, 350, 380, 0.4, 20, 0.2),
    ],
    "effnetv2_l": [
        (1, 87, 128, 0.1, 5, 0.0),
        (88, 175, 212, 0.2333, 11.6667, 0.1333),
        (176, 262, 296, 0.3667, 18.3333, 0.2667),
        (263, 350, 380, 0.5, 25, 0.4),
    ],
}


@pytest.mark.parametrize("preset", sorted(PAPER_TABLES))
def test_variant_presets_give_the_papers_stage_tables(preset: str) -> None:
    assert _schedule(f"progressive={preset}", "train.epochs=350") == PAPER_TABLES[preset]


def test_official_code_formula() -> None:
    # size_k = int(128 + (300 - 128) * (k + 1) / 4); RandAugment np.linspace(5, 15, 4); no dropout ramp
    table = _schedule(
        "progressive=official_code", "model=effnetv2_s", "data=imagenet", "data.augment.randaug_magnitude=15",
        "data.augment.mixup_alpha=0.2", "train.epochs=10",
    )  # fmt: skip
    assert table == [
        (1, 2, 171, 0.2, 5, 0.0),
        (3, 5, 214, 0.2, 8.3333, 0.0667),
        (6, 7, 257, 0.2, 11.6667, 0.1333),
        (8, 10, 300, 0.2, 15, 0.2),
    ]


def test_generic_paper_preset_ends_at_the_training_size() -> None:
    # B0 trains at 192: 128, 128 + 64 / 3, 128 + 128 / 3, 192
    sizes = [row[2] for row in _schedule("progressive=paper", "model=effnetv2_b0", "data=imagenet", "train.epochs=8")]
    assert sizes == [128, 149, 170, 192]


def test_without_progressive_one_stage_at_the_fixed_values() -> None:
    assert _schedule("model.drop_rate=0.25", "train.epochs=6") == [(1, 6, 32, 0.25, 10.0, 0.0)]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (("progressive=paper", "progressive.stages=8"), "progressive.stages=8 needs at least as many epochs"),
        (("progressive=paper", "progressive.min_size=64"), "progressive.min_size=64 exceeds progressive.max_size=32"),
        (
            ("progressive=paper", "progressive.min_size=16", "progressive.dropout_min=null"),
            "set both progressive.dropout_min",
        ),
        (
            ("progressive=paper", "progressive.min_size=16", "progressive.dropout_max=1.0"),
            "progressive.dropout_max=1.0 is outside [0.0, 1.0)",
        ),
        (
            ("progressive=paper", "progressive.min_size=16", "progressive.randaug_max=-1"),
            "progressive.randaug_max=-1.0 is outside [0.0, inf]",
        ),
        (
            ("progressive=paper", "progressive.min_size=16", "data.augment.randaug_layers=0"),
            "but data.augment.randaug_layers=0",
        ),
        (
            ("progressive=none", "progressive.max_size=24"),
            "progressive.max_size=24 has no effect with progressive.stages=1",
        ),
        (("progressive=none", "progressive.dropout_max=0.3"), "progressive.dropout_max=0.3 has no effect"),
    ],
)
def test_bad_progressive_settings_are_named(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        _schedule(*overrides)


# two stages, 16 px then max_size, dropout ramping to dropout_max; RandAugment off so the run
# is deterministic and a resumed run can be compared bit for bit
PROGRESSIVE = (
    "train.epochs=2", "progressive=paper", "progressive.stages=2", "progressive.min_size=16",
    "progressive.randaug_min=null", "progressive.randaug_max=null", "data.augment.randaug_layers=0",
)  # fmt: skip


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def sweep(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    sweep_dir = tmp_path_factory.mktemp("sweep") / "grid"
    # two jobs at a time through the joblib launcher (hydra/launcher=local_parallel)
    result = run_cli(
        "-m", *tiny_data(tiny_folder), *PROGRESSIVE, "hydra/launcher=local_parallel", "hardware.num_workers=1",
        "progressive.max_size=24,32", "progressive.dropout_max=0.2,0.4", f"hydra.sweep.dir={sweep_dir}",
        "logger=[csv,mlflow]",
    )  # fmt: skip
    return sweep_dir, result


def test_two_by_two_multirun_trains_every_stage_and_summarises(sweep) -> None:
    sweep_dir, result = sweep
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(d.name for d in sweep_dir.iterdir() if d.is_dir())
    assert jobs == ["0", "1", "2", "3", "mlflow"]  # the jobs and their shared MLflow store
    expected = {
        "progressive.max_size=24 progressive.dropout_max=0.2": (24, 0.2),
        "progressive.max_size=24 progressive.dropout_max=0.4": (24, 0.4),
        "progressive.max_size=32 progressive.dropout_max=0.2": (32, 0.2),
        "progressive.max_size=32 progressive.dropout_max=0.4": (32, 0.4),
    }
    rows = _csv(sweep_dir / "summary.csv")
    assert len(rows) == 4 and {row["overrides"] for row in rows} == set(expected)
    best = [float(row["best_val_top1"]) for row in rows]
    assert best == sorted(best, reverse=True)
    for row in rows:
        job_dir = sweep_dir / row["job"]
        metrics = json.loads((job_dir / "metrics.json").read_text())
        assert row["status"] == "completed" and not row["error"]
        assert float(row["best_val_top1"]) == pytest.approx(metrics["best_val_top1"])
        assert float(row["final_val_top1"]) == pytest.approx(metrics["val_top1"])
        assert float(row["wall_s"]) > 0 and float(row["images_per_s"]) > 0 and row["epochs"] == "2"
        # really trained at both sizes, one stage each, with the stage's dropout in the model
        max_size, dropout_max = expected[row["overrides"]]
        epochs = _csv(job_dir / "metrics.csv")
        assert [(e["stage"], int(e["image_size"])) for e in epochs] == [("0", 16), ("1", max_size)]
        log = (job_dir / "run.log").read_text()
        assert "stage 1/2 (epochs 1-1): image size 16, dropout 0.100" in log
        assert f"stage 2/2 (epochs 2-2): image size {max_size}, dropout {dropout_max:.3f}" in log
        last = ms.load_checkpoint(str(job_dir / "checkpoints" / "last.ckpt"))
        assert float(last["dropout.rate"].asnumpy()[0]) == pytest.approx(dropout_max)
    markdown = (sweep_dir / "summary.md").read_text()
    assert markdown.count("| completed |") == 4
    # logger=mlflow in a multirun: the jobs are runs of one experiment named after the sweep,
    # in the sweep folder's store
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{sweep_dir / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("grid").experiment_id])
    assert sorted(run.info.run_name.split(":")[0] for run in runs) == ["0", "1", "2", "3"]
    assert all(run.info.status == "FINISHED" and "best_val_top1" in str(run.data.metrics) for run in runs)
    assert (sweep_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sigterm_in_the_second_stage_then_resume_equals_the_uninterrupted_job(
    sweep, tiny_folder: Path, tmp_path: Path
) -> None:
    sweep_dir, _ = sweep
    reference = sweep_dir / "3"  # max_size 32, dropout_max 0.4
    overrides = (
        *tiny_data(tiny_folder), *PROGRESSIVE, "hardware.num_workers=1", "progressive.max_size=32",
        "progressive.dropout_max=0.4",
    )  # fmt: skip
    stopped = tmp_path / "stopped"
    assert sigterm_once_logged(overrides, stopped, "stage 2/2") == 128 + signal.SIGTERM
    recovery = ms.load_checkpoint(str(stopped / "checkpoints" / "recovery.ckpt"))
    assert json.loads(str(recovery["effv2_meta"]))["stage"] == 1

    resumed = tmp_path / "resumed"
    result = run_cli(*overrides, f"resume={stopped}", f"hydra.run.dir={resumed}")
    assert result.returncode == 0, result.stderr[-3000:]
    text = (resumed / "run.log").read_text()
    assert "resumed from" in text and "at epoch 2" in text
    assert "stage 2/2 (epochs 2-2): image size 32, dropout 0.400" in text and "stage 1/2" not in text
    rows = _csv(resumed / "metrics.csv")
    assert [(r["stage"], r["image_size"]) for r in rows] == [("0", "16"), ("1", "32")]
    expected = ms.load_checkpoint(str(reference / "checkpoints" / "last.ckpt"))
    actual = ms.load_checkpoint(str(resumed / "checkpoints" / "last.ckpt"))
    assert set(expected) == set(actual)
    for name in sorted(set(expected) - {"effv2_meta"}):
        np.testing.assert_array_equal(actual[name].asnumpy(), expected[name].asnumpy(), err_msg=name)


def test_a_failing_job_is_marked_failed_and_the_others_still_run(tiny_folder: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    # job 1 asks for a batch larger than the training set
    result = run_cli(
        "-m", *tiny_data(tiny_folder), "train.epochs=1", "data.batch_size=16,1000", f"hydra.sweep.dir={sweep_dir}"
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert (
        "error: 1 of 2 jobs failed: #1 (data.batch_size=1000 x 1 devices x 1 accumulation = 1000"
        in result.stdout + result.stderr
    )
    rows = _csv(sweep_dir / "summary.csv")
    assert [(r["job"], r["status"], r["overrides"]) for r in rows] == [
        ("0", "completed", "data.batch_size=16"),
        ("1", "failed", "data.batch_size=1000"),
    ]
    assert (
        float(rows[0]["best_val_top1"]) == json.loads((sweep_dir / "0" / "metrics.json").read_text())["best_val_top1"]
    )
    assert "exceeds the 80 training images" in rows[1]["error"] and not rows[1]["best_val_top1"]
    assert "| failed |" in (sweep_dir / "summary.md").read_text()


def test_optuna_search_with_parallel_local_jobs(tiny_folder: Path, tmp_path: Path) -> None:
    """search=progressive_optuna with its ranges replaced by tiny ones, two trials side by side
    through the joblib launcher."""
    sweep_dir = tmp_path / "search"
    result = run_cli(
        "-m", "search=progressive_optuna", "hydra/launcher=local_parallel", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2", "hardware.num_workers=1", *tiny_data(tiny_folder), "train.epochs=2",
        "progressive.stages=2", "progressive.min_size=choice(16,24)", "progressive.max_size=choice(32)",
        "progressive.dropout_max=interval(0.2,0.3)", "progressive.randaug_max=choice(10)",
        "progressive.mixup_max=interval(0.0,0.2)", f"hydra.sweep.dir={sweep_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Best value:" in result.stdout + result.stderr
    assert (sweep_dir / "optimization_results.yaml").is_file()
    rows = _csv(sweep_dir / "summary.csv")
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    for row in rows:
        job = json.loads((sweep_dir / row["job"] / "job.json").read_text())
        assert any(o.startswith("progressive.dropout_max=") for o in job["overrides"])
        assert job["return_value"] == pytest.approx(float(row["best_val_top1"]))


def test_every_staged_regulariser_has_its_config_range_and_fixed_value() -> None:
    """A regulariser added to schema.REGULARISERS is ramped by progressive.<name>_min / _max and
    held at its fixed config key otherwise: both must exist."""
    import typing
    from dataclasses import fields

    from effv2.config import schema

    names = {f.name for f in fields(schema.ProgressiveConfig)}
    assert {f"{n}_{end}" for n in schema.REGULARISERS for end in ("min", "max")} <= names
    for regulariser in schema.REGULARISERS.values():
        node = schema.RunConfig
        for key in regulariser.fixed.split("."):  # through the schema's dataclasses
            node = typing.get_type_hints(node, vars(schema))[key]
        assert node in (float, float | None), regulariser.fixed
