"""Multi-process launch: dry runs of every hardware option, a killed rank, a hung rank, an
absent device, the rank-table generator (the 2-rank training itself: test_data_parallel.py).
Traffic stays on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CONF_DIR, REPO, run_cli, tiny_data
from effv2.config import register_configs

register_configs()


def _dry_run(tmp_path: Path, *overrides: str) -> str:
    result = run_cli("distributed.dry_run=true", *overrides, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    return (tmp_path / "launch_plan.txt").read_text()


HARDWARE = sorted(p.stem for p in (CONF_DIR / "hardware").glob("*.yaml"))
EXPECTED_MSRUN = {
    "cpu_2p": (1, 2, 2),
    "cpu_2n": (2, 2, 1),
    "gpu_8p": (1, 8, 8),
    "ascend910_8p": (1, 8, 8),
    "ascend910_16p": (2, 16, 8),
}


@pytest.mark.parametrize("hardware", HARDWARE)
def test_dry_run_prints_every_nodes_command(hardware: str, tmp_path: Path) -> None:
    text = _dry_run(tmp_path, f"hardware={hardware}", "hardware.master_addr=10.1.2.3", "hardware.master_port=9000")
    commands = [line for line in text.splitlines() if not line.startswith("#")]
    assert all("EFFV2_WORKER=1" in c and f'PATH="{Path(sys.executable).parent}:$PATH"' in c for c in commands)
    # each rank reads its node's config (node 0's: .hydra/, node k's: ranks/node<k>/.hydra/)
    assert all(re.search(rf"-m effv2\.tasks\.rank {re.escape(str(tmp_path))} \d+$", c) for c in commands)
    if hardware in EXPECTED_MSRUN:
        nodes, workers, local = EXPECTED_MSRUN[hardware]
        assert len(commands) == nodes
        for node, command in enumerate(commands):
            assert f" msrun --worker_num={workers} --local_worker_num={local}" in command
            assert "--master_addr=10.1.2.3 --master_port=9000" in command and f"--node_rank={node}" in command
            assert f"--log_dir={tmp_path / 'ranks'}" in command and "--join=True" in command
            assert command.endswith(f"python -m effv2.tasks.rank {tmp_path} {node}")
    else:
        assert len(commands) == 1 and "msrun" not in commands[0]
    assert ("ONEDNN_MAX_CPU_ISA=" in text) == hardware.startswith("cpu")


def test_dry_run_of_the_rank_table_method(tmp_path: Path) -> None:
    table = tmp_path / "table.json"
    table.write_text("{}")
    text = _dry_run(tmp_path, "hardware=ascend910_16p", "hardware.launch=rank_table", f"hardware.rank_table={table}")
    commands = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(commands) == 16
    for rank, command in enumerate(commands):
        assert f"RANK_ID={rank} " in command and f"DEVICE_ID={rank % 8} " in command and "RANK_SIZE=16" in command
        assert f"RANK_TABLE_FILE={table}" in command


def test_an_absent_device_is_one_line(tmp_path: Path) -> None:
    result = run_cli("hardware=ascend910_16p", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "error:" in line]
    assert len(errors) == 1 and "hardware=ascend910_16p needs Ascend devices" in errors[0]
    assert "found none" in errors[0]


def test_killing_one_rank_ends_the_job_within_the_bound(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    # the micro network on the digits: the ranks start in seconds and 50 epochs outlast the kill
    overrides = ["hardware=cpu_2p", "model=effnetv2_micro", "train.epochs=50", "hardware.master_port=8152",
                 f"hydra.run.dir={run_dir}"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "run.py", *overrides], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    status = run_dir / "ranks" / "rank_1.json"
    worker_log = run_dir / "ranks" / "worker_1.log"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if status.exists() and worker_log.exists() and "training 50 epochs" in worker_log.read_text(errors="ignore"):
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the job ended before a rank could be killed"
    os.kill(json.loads(status.read_text())["pid"], 9)
    killed_at = time.monotonic()
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 2
    # run.py sees the rank's process gone within a poll (msrun's own heartbeat took ~30 s)
    assert time.monotonic() - killed_at < 20
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1 and "rank 1 ended before finishing" in errors[0] and "worker_1.log" in errors[0]


def test_rank_table_generator(tmp_path: Path) -> None:
    confs = []
    for node in (0, 1):
        conf = tmp_path / f"hccn{node}.conf"
        conf.write_text("".join(f"address_{d}=192.168.{node}.{10 + d}\nnetmask_{d}=255.255.255.0\n" for d in range(8)))
        confs.append(conf)
    out = tmp_path / "table.json"
    subprocess.run(
        [sys.executable, "launchers/rank_table.py", "--server", f"10.0.0.1:{confs[0]}", "--server",
         f"10.0.0.2:{confs[1]}", "--devices", "0-7", "--out", str(out)],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    table = json.loads(out.read_text())
    assert table["server_count"] == "2" and table["status"] == "completed"
    devices = [d for server in table["server_list"] for d in server["device"]]
    assert [d["rank_id"] for d in devices] == [str(r) for r in range(16)]
    assert devices[9] == {"device_id": "1", "device_ip": "192.168.1.11", "rank_id": "9"}
    bad = subprocess.run(
        [sys.executable, "launchers/rank_table.py", "--server", f"10.0.0.1:{confs[0]}", "--devices", "0-9",
         "--out", str(out)], cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "no address_<id> line for devices [8, 9]" in bad.stderr


def test_slurm_launcher_config_runs_one_task_per_node(monkeypatch) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    monkeypatch.setenv("SLURM_NODEID", "1")
    monkeypatch.setenv("MASTER_ADDR", "node-a")
    overrides = [
        "hydra/launcher=slurm", "hardware=ascend910_16p",
        "hardware.node_rank=${oc.env:SLURM_NODEID}", "hardware.master_addr=${oc.env:MASTER_ADDR}",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.effv2_launchers.slurm_launcher.SlurmLauncher"
    assert launcher["nodes"] == 2 and launcher["tasks_per_node"] == 1
    assert any("MASTER_ADDR=" in line and "SLURM_JOB_NODELIST" in line for line in launcher["setup"])
    assert cfg.hardware.node_rank == 1 and cfg.hardware.master_addr == "node-a"


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process: not gone, not a zombie (it can go between two reads of /proc)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_hung_rank_ends_the_job_within_the_timeout(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [
        "hardware=cpu_2p", "model=effnetv2_micro", "train.epochs=50", "hardware.master_port=8153",
        "distributed.hang_timeout=15",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "run.py", *overrides], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    status = run_dir / "ranks" / "rank_1.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if status.exists() and '"heartbeat": true' in status.read_text():
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the job ended before a rank could be stopped"
    pids = [json.loads((run_dir / "ranks" / f"rank_{r}.json").read_text())["pid"] for r in (0, 1)]
    os.kill(pids[1], 19)  # SIGSTOP: alive but making no progress
    stopped_at = time.monotonic()
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 2
    assert time.monotonic() - stopped_at < 120
    errors = [line for line in output.splitlines() if "error:" in line]
    # the stopped rank, or the one blocked waiting for it at the same step: both stall together
    assert len(errors) == 1 and "made no progress" in errors[0] and "distributed.hang_timeout=15" in errors[0]
    assert "rank 1" in errors[0] or "rank 0" in errors[0]
    time.sleep(1)
    for pid in pids:  # no rank is left behind
        assert not _running(pid)


def test_compile_cache_key_separates_configurations() -> None:
    from hydra import compose, initialize_config_dir

    from effv2.config import register_configs
    from effv2.launch.compile_cache import cache_key

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = cache_key(compose(config_name="config"))
        assert cache_key(compose(config_name="config", overrides=["ckpt=/a.ckpt", "resume=/r"])) == base
        for other in ("model=effnetv2_s", "data.train_size=48", "seed=1", "hardware.amp_level=O2"):
            assert cache_key(compose(config_name="config", overrides=[other])) != base, other


def test_a_second_identical_run_reuses_the_compiled_graphs(tiny_folder: Path, tmp_path: Path) -> None:
    overrides = (*tiny_data(tiny_folder), "train.epochs=1", "hardware.compile_cache=true")
    results = [run_cli(*overrides, f"hydra.run.dir={tmp_path / f'run{i}'}") for i in (1, 2)]
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    assert "Use the compilation cache" not in results[0].stdout + results[0].stderr
    assert "Use the compilation cache" in results[1].stdout + results[1].stderr
    first, second = ((tmp_path / f"run{i}" / "metrics.csv").read_text().splitlines() for i in (1, 2))
    columns = first[0].split(",")
    for key in ("train_loss", "val_top1", "val_top5"):
        index = columns.index(key)
        assert first[1].split(",")[index] == second[1].split(",")[index], key
