"""A real SLURM cluster (tests/slurm_cluster.py: two nodes on two network-namespace hosts, with
accounting, started here): sweeps of jobs through ``hydra/launcher=slurm``, a two-node job
through the launcher config's node wiring, a failed and a cancelled job reported without
stopping the others (the cancelled one continues from its folder exactly), and a job requeued
while it trains that resumes from its recovery checkpoint and ends bit-identical to an
uninterrupted run."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mindspore as ms
import netns
import numpy as np
import pytest
import slurm_cluster
from test_data_parallel import _assert_same_training

from conftest import BATCH, COMMON, REPO, resumable, run_cli, tiny_data

SLURM = ("hydra/launcher=slurm", "hydra.launcher.timeout_min=20")
SUBNET = "10.87.1"  # the cluster's hosts (tests/test_multinode.py's are on 10.87.0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[slurm_cluster.Cluster]:
    reason = slurm_cluster.missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    with netns.hosts(SUBNET, folder) as hosts:
        running = slurm_cluster.Cluster(folder, hosts)
        try:
            running.start()
            yield running
        finally:
            running.stop()


def _assert_same_weights(expected_run: Path, actual_run: Path) -> None:
    """Every tensor of the two runs' last.ckpt is the same, bit for bit."""
    expected, actual = (
        ms.load_checkpoint(str(run / "checkpoints" / "last.ckpt")) for run in (expected_run, actual_run)
    )
    for name in sorted(set(expected) - {"effv2_meta"}):
        np.testing.assert_array_equal(actual[name].asnumpy(), expected[name].asnumpy(), err_msg=name)


def _summary(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _training_processes(slurm_job_id: str) -> list[int]:
    """The job step's python processes of a SLURM job, on whichever host they run (not the srun
    that started them, whose command line names submitit too)."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"submitit.core._submit" not in argv or argv[0].endswith(b"srun"):
                continue
            if f"SLURM_JOB_ID={slurm_job_id}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
    return found


@contextlib.contextmanager
def _paused_mid_training(run_dir: Path, sweep: subprocess.Popen) -> Iterator[str]:
    """Once the sweep job in ``run_dir`` wrote its first recovery checkpoint, stop its training
    process (SIGSTOP) and yield its SLURM job id; on leaving, once the signal SLURM was asked to
    send is pending (or SLURM continued the process itself), continue it. The tiny job trains in
    about a second, so without the pause it could end before SLURM's signal reaches it."""
    recovery = run_dir / "checkpoints" / "recovery.ckpt"
    deadline = time.monotonic() + 600
    while not recovery.exists() and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if not recovery.exists():
        pytest.fail(f"the sweep ended (exit {sweep.returncode}) before {recovery} was written:\n"
                    f"{sweep.stdout.read()[-3000:] if sweep.poll() is not None else ''}")  # fmt: skip
    # "SLURM job 1_0 (job id 2) on <node>" for an array task, "SLURM job 2 on <node>" otherwise
    job_id, number = re.search(r"SLURM job (\S+)(?: \(job id (\d+)\))? on ", (run_dir / "run.log").read_text()).groups()
    training = _training_processes(number or job_id)
    assert training, f"no training process of SLURM job {job_id} found"
    for pid in training:
        os.kill(pid, signal.SIGSTOP)
    assert not (run_dir / "metrics.json").exists()  # paused before training ended
    yield job_id
    deadline = time.monotonic() + 60
    for pid in training:
        status = Path(f"/proc/{pid}/status")
        while True:
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            except FileNotFoundError:
                break
            pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
            if pending or not fields["State"].strip().startswith("T"):
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGCONT)
                pytest.fail(f"SLURM's signal never reached the training process {pid} of job {job_id}")
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_a_sweep_runs_its_jobs_under_slurm_and_reports_the_failed_and_the_cancelled_one(
    cluster: slurm_cluster.Cluster, resumable_reference: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """3 jobs as one job array: #0 (the resumable reference run) is cancelled with scancel while it
    trains, #1 trains to the end, #2 fails on its override. The sweep waits for all, lists each
    as it ended, and the cancelled job continues from its folder to the uninterrupted weights."""
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "run.py", "-m", *resumable(tiny_folder), *SLURM, "data.batch_size=8,16,5000",
               f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    sweep = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "HYDRA_FULL_ERROR": "0"})  # fmt: skip
    with _paused_mid_training(sweep_dir / "0", sweep) as cancelled:
        subprocess.run(["scancel", cancelled], check=True)
    output, _ = sweep.communicate(timeout=900)
    # the sweep ends with the failed jobs named (exit 1), after the others finished
    assert sweep.returncode == 1, output[-3000:]
    assert "error: 2 of 3 jobs failed: " in output, output[-3000:]
    rows = {row["overrides"]: row for row in _summary(sweep_dir)}
    assert set(rows) == {"data.batch_size=8", "data.batch_size=16", "data.batch_size=5000"}
    completed = rows["data.batch_size=16"]
    assert completed["status"] == "completed" and float(completed["final_val_top1"]) >= 0
    assert float(completed["wall_s"]) > 0 and completed["epochs"] == "3"
    failed = rows["data.batch_size=5000"]
    assert failed["status"] == "failed" and "exceeds the 80 training images" in failed["error"]
    killed = rows["data.batch_size=8"]
    assert killed["status"] == "failed", killed
    assert killed["error"].startswith(f"SLURM job {cancelled} ended CANCELLED before it finished; continue it with: ")
    assert killed["error"].endswith(f"resume={sweep_dir / '0'}")
    jobs = [json.loads((sweep_dir / row["job"] / "job.json").read_text()) for row in rows.values()]
    slurm_ids = {job["slurm_job_id"] for job in jobs}
    assert None not in slurm_ids and len(slurm_ids) == 3  # each job ran as a SLURM job of its own
    # submitted as one job array: a task folder with its log per job
    assert len(list((sweep_dir / ".submitit").glob("*_*/*_log.out"))) == 3
    # the cancelled job wrote its recovery checkpoint on SLURM's SIGTERM and continues from its
    # folder with the command its error line gives
    assert "SIGTERM received: stopped after step" in (sweep_dir / "0" / "run.log").read_text()
    python, script, *overrides = shlex.split(killed["error"].split(" continue it with: ")[1])
    assert (python, script) == ("python", "run.py")
    resumed = run_cli(*overrides, f"hydra.run.dir={tmp_path / 'resumed'}", timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_weights(resumable_reference, tmp_path / "resumed")


def test_a_two_node_job_through_the_launcher_wiring_trains_as_one_process(
    cluster: slurm_cluster.Cluster, tiny_folder: Path, runs: dict[str, Path], tmp_path: Path
) -> None:
    """One SLURM job on both nodes: one task per node (the launcher config's ``nodes``), each
    starting its node's rank with msrun, node 1 finding node 0 through ``MASTER_ADDR`` (node 0's
    host name, as the launcher config's setup exports it)."""
    sweep_dir = tmp_path / "job"
    result = run_cli(
        "-m", *tiny_data(tiny_folder, BATCH), *COMMON, *SLURM, "hardware=cpu_2n", "train.epochs=2",
        "hardware.node_rank=${oc.env:SLURM_NODEID}", "hardware.master_addr=${oc.env:MASTER_ADDR}",
        "hardware.master_port=8175", f"hydra.sweep.dir={sweep_dir}", timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (row,) = _summary(sweep_dir)
    assert row["status"] == "completed", row
    job = sweep_dir / "0"
    assert re.search(r"SLURM job \S+ on n0, restart 0", (job / "run.log").read_text())
    assert re.search(r"SLURM job \S+ on n1, restart 0", (job / "ranks" / "node1" / "run.log").read_text())
    assert "starting ranks [1] of 2" in (job / "ranks" / "node1" / "run.log").read_text()
    _assert_same_training(runs["one"] / "checkpoints" / "last.ckpt", job / "checkpoints" / "last.ckpt")


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
    with _paused_mid_training(sweep_dir / "0", sweep) as job_id:
        subprocess.run([*stop, job_id], check=True)
    deadline = time.monotonic() + 600
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
    _assert_same_weights(resumable_reference, sweep_dir / "0")
    with (sweep_dir / "0" / "metrics.csv").open(newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2", "3"]
