"""A one-host SLURM cluster for the tests, from Debian's slurm-wlm and munge (``.ci/run`` installs
them): munged, slurmctld and one slurmd on 127.0.0.1 with a generated slurm.conf (one node with
this machine's CPUs; Debian's build has no multiple-slurmd support, so one host is one node),
started as root and stopped after. Client commands find it through ``SLURM_CONF``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

NODE = socket.gethostname().split(".")[0]  # slurmctld must run on the host its config names
DAEMONS = ("munged", "slurmctld", "slurmd")


def missing() -> str | None:
    """Why no cluster can run here, or None."""
    if os.geteuid() != 0:
        return "the SLURM tests start munged, slurmctld and slurmd and need root"
    absent = [name for name in (*DAEMONS, "sbatch", "scontrol") if shutil.which(name) is None]
    if absent:
        return f"SLURM is not installed ({', '.join(absent)} missing: apt-get install slurm-wlm munge)"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _conf(folder: Path, socket_path: Path) -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return f"""ClusterName=effv2
SlurmctldHost={NODE}(127.0.0.1)
MailProg=/bin/true
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


class Cluster:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        for sub in ("state", "spool", "munge"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        munge = self.folder / "munge"
        self.conf.write_text(_conf(self.folder, munge / "socket"))
        os.environ["SLURM_CONF"] = str(self.conf)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._daemon(["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={munge / 'socket'}",
                      f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                      f"--seed-file={munge / 'seed'}"])  # fmt: skip
        self._daemon(["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._daemon(["slurmd", "-D", "-N", NODE, "-f", str(self.conf)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.strip()
            if state in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the SLURM node never became idle ({state!r}); logs in {self.folder}")

    def _daemon(self, command: list[str]) -> None:
        log = (self.folder / f"{command[0]}.out").open("w")
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(1.0)
        if self.processes[-1].poll() is not None:
            raise RuntimeError(f"{command[0]} exited at start: {(self.folder / f'{command[0]}.out').read_text()}")

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--user=root"], capture_output=True)
        for proc in reversed(self.processes):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        os.environ.pop("SLURM_CONF", None)

    def wait_idle(self, timeout: float = 600) -> None:
        """Until no job is queued or running."""
        deadline = time.monotonic() + timeout
        while subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
            if time.monotonic() > deadline:
                raise TimeoutError("SLURM jobs still queued")
            time.sleep(1)
