"""A real SLURM cluster (tests/slurm_cluster.py: one host, one node, started here): sweeps of
jobs through ``hydra/launcher=slurm``, a multi-process job through the launcher config's node
wiring, a failed job reported without stopping the others, and a job requeued while it trains
that resumes from its recovery checkpoint and ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
import slurm_cluster
from test_data_parallel import _assert_same_training

from conftest import BATCH, COMMON, REPO, resumable, run_cli, tiny_data

SLURM = ("hydra/launcher=slurm", "hydra.launcher.timeout_min=20")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[slurm_cluster.Cluster]:
    reason = slurm_cluster.missing()
    if reason:
        pytest.skip(reason)
    running = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm"))
    running.start()
    yield running
    running.stop()


def _summary(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_sweep_runs_its_jobs_under_slurm_and_reports_the_failed_one(
    cluster: slurm_cluster.Cluster, tiny_folder: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "-m", *tiny_data(tiny_folder), *SLURM, "train.epochs=1", "hardware.num_workers=1",
        "data.batch_size=16,8,5000", f"hydra.sweep.dir={sweep_dir}", timeout=900,
    )  # fmt: skip
    # the sweep ends with the failed job named (exit 1), after the others finished
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    assert "error: 1 of 3 jobs failed: #2 (data.batch_size=5000" in result.stdout + result.stderr
    rows = {row["overrides"]: row for row in _summary(sweep_dir)}
    assert set(rows) == {"data.batch_size=16", "data.batch_size=8", "data.batch_size=5000"}
    for batch in (16, 8):
        row = rows[f"data.batch_size={batch}"]
        assert row["status"] == "completed" and float(row["final_val_top1"]) >= 0 and float(row["wall_s"]) > 0
    failed = rows["data.batch_size=5000"]
    assert failed["status"] == "failed" and "exceeds the 80 training images" in failed["error"]
    jobs = [json.loads((sweep_dir / row["job"] / "job.json").read_text()) for row in rows.values()]
    slurm_ids = {job["slurm_job_id"] for job in jobs}
    assert None not in slurm_ids and len(slurm_ids) == 3  # each job ran as a SLURM job of its own
    # submitted as one job array: a task folder with its log per job
    assert len(list((sweep_dir / ".submitit").glob("*_*/*_log.out"))) == 3


def test_a_multi_process_job_through_the_launcher_wiring_trains_as_one_process(
    cluster: slurm_cluster.Cluster, tiny_folder: Path, runs: dict[str, Path], tmp_path: Path
) -> None:
    """One SLURM task per node (one node here: Debian's slurmd runs one node per host), which
    starts that node's 2 ranks with msrun at the address the launcher config exports."""
    sweep_dir = tmp_path / "job"
    result = run_cli(
        "-m", *tiny_data(tiny_folder, BATCH), *COMMON, *SLURM, "hardware=cpu_2p", "train.epochs=2",
        "hardware.node_rank=${oc.env:SLURM_NODEID}", "hardware.master_addr=${oc.env:MASTER_ADDR}",
        "hardware.master_port=8175", f"hydra.sweep.dir={sweep_dir}", timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (row,) = _summary(sweep_dir)
    assert row["status"] == "completed", row
    assert (sweep_dir / "0" / "ranks" / "rank_1.json").is_file()
    _assert_same_training(runs["one"] / "checkpoints" / "last.ckpt", sweep_dir / "0" / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize(
    "stop,received",
    [
        (["scontrol", "requeue"], "SIGTERM"),  # preemption / requeue: SLURM ends and requeues the job
        (["scancel", "--signal=USR2"], "SIGUSR2"),  # the time-limit warning: the job requeues itself
    ],
)
def test_a_requeued_job_resumes_from_its_recovery_checkpoint_exactly(
    cluster: slurm_cluster.Cluster, resumable_reference: Path, tiny_folder: Path, tmp_path: Path,
    stop: list[str], received: str,
) -> None:  # fmt: skip
    sweep_dir = tmp_path / "requeued"
    command = [sys.executable, "run.py", "-m", *resumable(tiny_folder), *SLURM, f"hydra.sweep.dir={sweep_dir}"]
    sweep = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "HYDRA_FULL_ERROR": "0"})  # fmt: skip
    recovery = sweep_dir / "0" / "checkpoints" / "recovery.ckpt"
    deadline = time.monotonic() + 600
    while not recovery.exists() and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert recovery.exists() and not (sweep_dir / "0" / "metrics.json").exists()
    (job_id,) = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    subprocess.run([*stop, job_id], check=True)
    # SLURM holds a requeued job back for a while (its begin time); let it start as soon as it is pending
    while sweep.poll() is None and time.monotonic() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
        if state.strip() == "PENDING":
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
            break
        time.sleep(0.5)
    output, _ = sweep.communicate(timeout=900)
    assert sweep.returncode == 0, output[-3000:]
    log_text = (sweep_dir / "0" / "run.log").read_text()
    assert f"{received} received: stopped after step" in log_text
    assert f"SLURM restarted job {job_id} (restart 1): resuming from {sweep_dir / '0'}" in log_text
    expected = ms.load_checkpoint(str(resumable_reference / "checkpoints" / "last.ckpt"))
    actual = ms.load_checkpoint(str(sweep_dir / "0" / "checkpoints" / "last.ckpt"))
    for name in sorted(set(expected) - {"effv2_meta"}):
        np.testing.assert_array_equal(actual[name].asnumpy(), expected[name].asnumpy(), err_msg=name)
    with (sweep_dir / "0" / "metrics.csv").open(newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2", "3"]
