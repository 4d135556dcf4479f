"""Two nodes, one job, for real: each "host" is a network namespace with its own address and
host name (tests/netns.py), each runs ``python run.py hardware=cpu_2n hardware.node_rank=<k>
hardware.master_addr=<node 0's address>`` with one shared run folder, as users do on two hosts
with a shared file system. msrun on 127.0.0.1 cannot stand in: each msrun finds the address
local and starts a scheduler of its own.

The job trains what one process with ``train.accumulation_steps=2`` trains (every tensor of the
checkpoint), node 0 alone writes the run's files, evaluation equals one process, and a node that
dies mid-run ends the job within ``distributed.hang_timeout`` naming it; ``resume=`` continues."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import netns
import pytest
from test_data_parallel import _assert_same_training, _reads

from conftest import BATCH, COMMON, EVAL_32PX, ONE_PROCESS, REPO, run_cli, tiny_data

SUBNET = "10.87.0"
TWO_NODES = ("hardware=cpu_2n", f"hardware.master_addr={SUBNET}.1")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[netns.Hosts]:
    """Two hosts (network namespaces) at 10.87.0.1 and .2 (tests/netns.py); removed after."""
    reason = netns.missing()
    if reason:
        pytest.skip(reason)
    try:
        with netns.hosts(SUBNET, tmp_path_factory.mktemp("hosts")) as made:
            yield made
    except RuntimeError as exc:  # e.g. a sandbox without network namespaces
        pytest.skip(f"cannot create network namespaces here: {exc}")


def _node(hosts: netns.Hosts, node: int, overrides: tuple[str, ...], run_dir: Path) -> subprocess.Popen:
    command = hosts.on_host(node, [sys.executable, "run.py", *overrides, f"hardware.node_rank={node}",
                                   f"hydra.run.dir={run_dir}"])  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HYDRA_FULL_ERROR": "0"})  # fmt: skip


def _job(hosts: netns.Hosts, overrides: tuple[str, ...], run_dir: Path, port: int) -> list[tuple[int, str]]:
    """Both nodes of one job; (exit code, output) of each."""
    procs = [_node(hosts, node, (*overrides, f"hardware.master_port={port}"), run_dir) for node in (0, 1)]
    return [(proc.wait(timeout=600), proc.stdout.read()) for proc in procs]


@pytest.fixture(scope="module")
def two_node_run(hosts: netns.Hosts, tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("two_nodes") / "run"
    results = _job(hosts, (*tiny_data(tiny_folder, BATCH), *COMMON, *TWO_NODES, "train.epochs=2"), run_dir, 8171)
    for node, (code, output) in enumerate(results):
        assert code == 0, f"node {node}: {output[-3000:]}"
    return run_dir


def test_two_nodes_train_what_one_process_with_accumulation_trains(two_node_run: Path, runs: dict[str, Path]) -> None:
    _assert_same_training(runs["one"] / "checkpoints" / "last.ckpt", two_node_run / "checkpoints" / "last.ckpt")
    for epoch in (1, 2):  # node k's rank k reads global micro-batch k of the step
        single = _reads(runs["one"], epoch, 0)
        assert _reads(two_node_run, epoch, 0) + _reads(two_node_run, epoch, 1) == single


def test_node_0_writes_the_runs_files_and_node_1_only_its_own(two_node_run: Path) -> None:
    files = {str(p.relative_to(two_node_run)) for p in two_node_run.rglob("*") if p.is_file()}
    node1 = {f for f in files if "node1" in f or f.endswith(("_1.log", "_1.json", "rank1.txt"))}
    assert node1 == {
        "ranks/node1/run.log", "ranks/node1/.hydra/config.yaml", "ranks/node1/.hydra/hydra.yaml",
        "ranks/node1/.hydra/overrides.yaml", "ranks/msrun_node1.log", "ranks/worker_1.log", "ranks/rank_1.json",
        "manifests/node1.json", "manifests/train.node1.manifest.npz", "manifests/val.node1.manifest.npz",
        "reads/epoch0001_rank1.txt", "reads/epoch0002_rank1.txt",
    }  # fmt: skip
    assert {"run.log", "metrics.csv", "metrics.json", "checkpoints/last.ckpt", ".hydra/config.yaml"} <= files
    run_log = (two_node_run / "run.log").read_text()
    assert "starting ranks [0] of 2" in run_log and "starting ranks [1]" not in run_log and "[rank 1]" not in run_log
    assert "starting ranks [1] of 2" in (two_node_run / "ranks" / "node1" / "run.log").read_text()
    assert "node_rank: 1" in (two_node_run / "ranks" / "node1" / ".hydra" / "config.yaml").read_text()


def test_eval_on_two_nodes_equals_one_process(
    hosts: netns.Hosts, best_ckpt: Path, eval_top1: float, tmp_path: Path
) -> None:
    results = _job(hosts, ("task=eval", EVAL_32PX, f"ckpt={best_ckpt}", *TWO_NODES), tmp_path / "eval", 8172)
    for node, (code, output) in enumerate(results):
        assert code == 0, f"node {node}: {output[-3000:]}"
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == 359 and metrics["val_top1"] == pytest.approx(eval_top1, abs=1e-9)


def test_a_lost_node_ends_the_job_naming_it_and_resume_continues(
    hosts: netns.Hosts, tiny_folder: Path, runs: dict[str, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "lost"
    overrides = (*tiny_data(tiny_folder, BATCH), *COMMON, *TWO_NODES, "train.epochs=2", "distributed.hang_timeout=20",
                 "hardware.master_port=8173")  # fmt: skip
    procs = [_node(hosts, node, overrides, run_dir) for node in (0, 1)]
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # epoch 1 is done: node 1 goes on into epoch 2
    assert procs[0].poll() is None, procs[0].stdout.read()[-3000:]
    for pid in hosts.processes(1):
        os.kill(pid, signal.SIGKILL)  # the host is gone: its launcher, msrun and rank
    lost = time.monotonic()
    code, output = procs[0].wait(timeout=300), procs[0].stdout.read()
    procs[1].wait(timeout=60)
    assert code == 2 and time.monotonic() - lost < 20 + 30, output[-3000:]
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1 and "rank 1 (node 1)" in errors[0], errors
    resumed = tmp_path / "resumed"
    result = run_cli(*tiny_data(tiny_folder, BATCH), *COMMON, *ONE_PROCESS, "train.epochs=2", f"resume={run_dir}",
                     f"hydra.run.dir={resumed}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_training(runs["one"] / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt")
