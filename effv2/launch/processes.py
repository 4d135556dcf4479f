"""Start the ranks of a multi-process job from run.py, with MindSpore's own process starters (settings: distributed.*).

``launch=msrun``: one ``msrun`` per node (it ships with the mindspore wheel and runs the
scheduler and the local workers). ``launch=rank_table``: the Ascend rank-table method, one
process per local device with RANK_TABLE_FILE / DEVICE_ID / RANK_ID / RANK_SIZE.

The parent has already composed the config and created the run folder; every rank reads that
``.hydra/config.yaml`` (``python -m effv2.tasks.rank <run folder>``), so Hydra's ``${now:}``
cannot give the ranks different folders.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from effv2.config.schema import HardwareConfig, RunConfig, node_path, task_of
from effv2.errors import UserError
from effv2.launch.device import CPU_ISA_VARIABLE, cpu_isa_cap
from effv2.launch.ranks import WORKER_ENV, rank_status_path

log = logging.getLogger(__name__)


@dataclass
class ProcessPlan:
    node: int
    ranks: list[int]
    command: list[str]
    env: dict[str, str]  # the variables set on top of the inherited environment
    log: str

    def render(self) -> str:
        variables = " ".join(f'{k}="{v}"' if "$" in v else f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return f"# node {self.node}, ranks {self.ranks}, log {self.log}\n{variables} {shlex.join(self.command)}"


def world_size(hw: HardwareConfig) -> int:
    return hw.nodes * hw.devices_per_node


def needs_launch(hw: HardwareConfig) -> bool:
    return world_size(hw) > 1 and os.environ.get(WORKER_ENV) != "1"


def _base_env(cfg: RunConfig) -> dict[str, str]:
    # msrun starts a bare "python" from PATH: put this interpreter's folder first
    env = {WORKER_ENV: "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}$PATH"}
    if cfg.hardware.device_target.name == "CPU":  # the cap the ranks' task needs, unless the user set one
        env[CPU_ISA_VARIABLE] = os.environ.get(CPU_ISA_VARIABLE) or cpu_isa_cap(cfg.hardware, task_of(cfg))
    return env


def _worker_command(run_dir: Path, node: int) -> list[str]:
    return ["python", "-m", "effv2.tasks.rank", str(run_dir), str(node)]


def plan(cfg: RunConfig, run_dir: Path) -> list[ProcessPlan]:
    """Every process each node starts, in node order (the dry run prints all of them)."""
    hw = cfg.hardware
    per_node, total = hw.devices_per_node, world_size(hw)
    logs = run_dir / "ranks"
    plans = []
    for node in range(hw.nodes):
        node_ranks = list(range(node * per_node, (node + 1) * per_node))
        if hw.launch.name == "msrun":
            command = [
                "msrun", f"--worker_num={total}", f"--local_worker_num={per_node}",
                f"--master_addr={hw.master_addr}", f"--master_port={hw.master_port}", f"--node_rank={node}",
                f"--log_dir={logs}", "--join=True", f"--cluster_time_out={cfg.distributed.cluster_timeout}",
                *_worker_command(run_dir, node),
            ]  # fmt: skip
            plans.append(ProcessPlan(node, node_ranks, command, _base_env(cfg), str(logs / "worker_<rank>.log")))
        elif hw.launch.name == "rank_table":
            if not hw.rank_table:
                raise UserError(f"hardware={hw.name} with launch=rank_table needs hardware.rank_table=<json file>")
            for device, rank in enumerate(node_ranks):
                env = {
                    **_base_env(cfg),
                    "RANK_TABLE_FILE": str(Path(hw.rank_table).expanduser().resolve()),
                    "DEVICE_ID": str(device),
                    "RANK_ID": str(rank),
                    "RANK_SIZE": str(total),
                }
                command = [sys.executable, *_worker_command(run_dir, node)[1:]]
                plans.append(ProcessPlan(node, [rank], command, env, str(logs / f"worker_{rank}.log")))
        elif total == 1:
            command = [sys.executable, *_worker_command(run_dir, 0)[1:]]
            plans.append(ProcessPlan(0, [0], command, _base_env(cfg), str(run_dir / "run.log")))
        else:
            raise UserError(f"hardware={hw.name} asks for {total} processes but launch=none; use msrun or rank_table")
    return plans


def print_plan(cfg: RunConfig, run_dir: Path) -> float:
    """distributed.dry_run=true: show what each node would start, start nothing."""
    text = "\n".join(p.render() for p in plan(cfg, run_dir))
    print(text)
    target = run_dir / node_path(cfg.hardware.node_rank, "launch_plan.txt")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n")
    return 0.0


# msrun's line for a worker that exited with an error: its pid and exit code
MSRUN_WORKER_EXIT = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")


def _failed_rank(run_dir: Path, output: str, ranks: list[int]) -> str:
    """Name the rank that failed first: msrun reports the pid of the first worker that exited
    (it then kills the others), which the ranks' status files map to a rank."""
    pids = {}
    for rank in ranks:
        status = rank_status_path(run_dir, rank)
        if status.exists():
            pids[json.loads(status.read_text())["pid"]] = rank
    for line in output.splitlines():
        match = MSRUN_WORKER_EXIT.search(line)
        if match and int(match.group(1)) in pids:
            rank = pids[int(match.group(1))]
            return f"rank {rank} exited with code {match.group(2)}; see {run_dir / 'ranks' / f'worker_{rank}.log'}"
    for line in output.splitlines():
        match = re.search(r"worker (\d+) is the first one timed out", line)
        if match:
            rank = match.group(1)
            return f"rank {rank} stopped answering; see {run_dir / 'ranks' / f'worker_{rank}.log'}"
    missing = [r for r in ranks if not rank_status_path(run_dir, r).exists()]
    if missing:
        return f"rank {missing[0]} never started; see {run_dir / 'ranks' / f'worker_{missing[0]}.log'}"
    return f"see the logs in {run_dir / 'ranks'}"


def _describe(rank: int, per_node: int, nodes: int) -> str:
    return f"rank {rank} (node {rank // per_node})" if nodes > 1 else f"rank {rank}"


def _hung_rank(run_dir: Path, hw: HardwareConfig, timeout: int) -> str | None:
    """The stalest rank once any rank has made no progress for ``timeout`` seconds. Every rank's
    status file is read, other nodes' too where the run folder is shared: a node that died is then
    named, not the local rank left waiting for it in a collective."""
    if timeout <= 0:
        return None
    idle = {}
    for rank in range(world_size(hw)):
        status = rank_status_path(run_dir, rank)
        try:
            state = json.loads(status.read_text())
            since = time.time() - status.stat().st_mtime
        except (OSError, ValueError):
            continue  # not written yet, being rewritten right now, or on an unshared node
        if state.get("heartbeat") and state.get("status") == "running":
            idle[rank] = since
    if not idle or max(idle.values()) <= timeout:
        return None
    # a local rank whose process still runs is waiting, not lost: name one that is gone (or on
    # another node, where this launcher cannot tell) when there is one over the timeout
    stale = {rank: since for rank, since in idle.items() if since > timeout}
    # a rank that stopped soon after the stalest one stopped too: a node lost a moment after its
    # peer entered a collective is named, not the peer left waiting (it was over the timeout first)
    stopped = {rank: since for rank, since in idle.items() if since > timeout / 2}
    gone = {rank: since for rank, since in stopped.items() if not _running_here(run_dir, rank, hw)}
    rank = max(gone or stale, key=(gone or stale).get)
    log_file = run_dir / "ranks" / f"worker_{rank}.log"
    others = "; the other ranks wait for it in their collectives" if len(idle) > 1 else ""
    who = _describe(rank, hw.devices_per_node, hw.nodes)
    return f"{who} made no progress for {idle[rank]:.0f} s (distributed.hang_timeout={timeout}){others}; see {log_file}"


def _running_here(run_dir: Path, rank: int, hw: HardwareConfig) -> bool:
    """Whether ``rank`` is one of this node's and its process is alive."""
    if rank // hw.devices_per_node != hw.node_rank:
        return False
    try:
        return _alive(json.loads(rank_status_path(run_dir, rank).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return False


def _lost_rank(run_dir: Path, ranks: list[int], hw: HardwareConfig) -> str | None:
    """A rank of this node whose process is gone (killed, or crashed) while its status still says
    running: named within a poll, not after msrun's own heartbeat gives up on it (~30 s). A rank
    that ends normally or with an error says so in its status first (effv2.tasks.rank). msrun
    kills the other workers within a poll of the first one's end, so where several are gone the
    one msrun saw exit first is named."""
    gone = {}
    for rank in ranks:
        try:
            state = json.loads(rank_status_path(run_dir, rank).read_text())
        except (OSError, ValueError):
            continue  # not written yet, or being rewritten right now
        if state.get("status") == "running" and not _alive(state.get("pid")):
            gone[state.get("pid")] = rank
    if not gone:
        return None
    pid = next((pid for pid in _exits_seen_by_msrun(run_dir, hw.node_rank) if pid in gone), min(gone, key=gone.get))
    rank = gone[pid]
    log_file = run_dir / "ranks" / f"worker_{rank}.log"
    who = _describe(rank, hw.devices_per_node, hw.nodes)
    return f"{who} ended before finishing (its process {pid} is gone: killed or crashed); see {log_file}"


def _exits_seen_by_msrun(run_dir: Path, node: int) -> list[int]:
    """The pids of the workers msrun saw exit with an error, first first (empty without msrun)."""
    try:
        output = (run_dir / "ranks" / f"msrun_node{node}.log").read_text(errors="replace")
    except OSError:
        return []
    return [int(match.group(1)) for match in MSRUN_WORKER_EXIT.finditer(output)]


def _alive(pid: object) -> bool:
    """Whether process ``pid`` runs here and is not a zombie awaiting its parent."""
    try:
        with open(f"/proc/{int(pid)}/stat") as stat:  # type: ignore[arg-type]
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, ValueError, TypeError, IndexError):
        return False


def _end_ranks(run_dir: Path, ranks: list[int]) -> None:
    """msrun starts its workers in sessions of their own: end each rank by its recorded pid."""
    for rank in ranks:
        try:
            pid = json.loads(rank_status_path(run_dir, rank).read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            continue


def launch(cfg: RunConfig, run_dir: Path) -> float:
    plans = plan(cfg, run_dir)
    local = [p for p in plans if p.node == cfg.hardware.node_rank]
    if not local:
        raise UserError(f"hardware.node_rank={cfg.hardware.node_rank} is outside 0..{cfg.hardware.nodes - 1}")
    (run_dir / "ranks").mkdir(exist_ok=True)
    local_ranks = [r for p in local for r in p.ranks]
    log.info("starting ranks %s of %d through %s; logs in %s", local_ranks, world_size(cfg.hardware),
             cfg.hardware.launch.name, run_dir / "ranks")  # fmt: skip
    started = time.monotonic()
    processes = []
    for process_plan in local:
        # msrun writes the workers' logs itself; its own output goes beside them
        if cfg.hardware.launch.name == "rank_table":
            out_path = Path(process_plan.log)
        else:
            out_path = run_dir / "ranks" / f"msrun_node{process_plan.node}.log"
        out = out_path.open("w")
        env = {**os.environ, **{key: os.path.expandvars(value) for key, value in process_plan.env.items()}}
        # a session of its own, so ending the job ends msrun's workers too
        proc = subprocess.Popen(
            process_plan.command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        processes.append((process_plan, proc, out))
    failed = None
    while processes and failed is None:
        failed = _lost_rank(run_dir, local_ranks, cfg.hardware) or _hung_rank(
            run_dir, cfg.hardware, cfg.distributed.hang_timeout
        )
        for item in list(processes):
            process_plan, proc, out = item
            code = proc.poll()
            if code is None:
                continue
            processes.remove(item)
            out.close()
            if code != 0:
                output = Path(out.name).read_text(errors="replace")
                if cfg.hardware.launch.name == "rank_table":
                    failed = f"rank {process_plan.ranks[0]} exited with code {code}; see {process_plan.log}"
                else:
                    failed = _failed_rank(run_dir, output, process_plan.ranks)
        time.sleep(0.5)
    for _, proc, out in processes:  # one rank failed or hung: end the others
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        out.close()
    if failed:
        _end_ranks(run_dir, local_ranks)
    if failed:
        raise UserError(
            f"hardware={cfg.hardware.name}: the job failed after {time.monotonic() - started:.0f} s: {failed}"
        )
    return _summarise(cfg, run_dir, local_ranks)


def _summarise(cfg: RunConfig, run_dir: Path, local_ranks: list[int]) -> float:
    """Every rank ended cleanly; after training they must hold the very same weights. Returns
    the task's metric, which the ranks computed together (the same on each)."""
    statuses = [json.loads(rank_status_path(run_dir, r).read_text()) for r in local_ranks]
    unfinished = [r for r, s in zip(local_ranks, statuses, strict=True) if s.get("status") != "done"]
    if unfinished:
        raise UserError(f"rank {unfinished[0]} exited without finishing; see {run_dir / 'ranks'}")
    if task_of(cfg) == "train":
        digests = {s.get("weights") for s in statuses}
        if len(digests) != 1 or None in digests:
            raise UserError(
                f"the ranks finished with different weights ({len(digests)} distinct digests); see {run_dir}"
            )
        log.info("all %d local ranks finished with identical weights; run folder %s", len(local_ranks), run_dir)
    else:
        log.info("all %d local ranks finished; run folder %s", len(local_ranks), run_dir)
    return float(statuses[0]["metric"])
