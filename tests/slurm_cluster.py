"""A two-node SLURM cluster on this machine for the tests, from Debian's slurm-wlm, slurmdbd,
munge and mariadb-server (``.ci/run`` installs them): munged, a MariaDB server, slurmdbd and
slurmctld here, and one slurmd on each of two hosts (tests/netns.py: network namespaces with
their own address and host name, n0 and n1, each claiming this machine's CPUs; Debian's slurmd
is built without multiple-slurmd support, so each needs a host of its own). Generated configs,
started as root in a temporary folder and stopped after. Client commands find it through
``SLURM_CONF``.

Accounting (slurmdbd on MariaDB) is there because submitit learns how a job ended from
``sacct``: without it a job that was cancelled or killed, and so wrote no result, is waited for
forever, as on a real cluster without accounting."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import netns

CONTROLLER = socket.gethostname().split(".")[0]  # slurmctld must run on the host its config names
PROGRAMS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd")
DATABASE_PASSWORD = "effv2-tests"  # a throwaway server on 127.0.0.1 that lives as long as the tests


def missing() -> str | None:
    """Why no cluster can run here, or None."""
    if os.geteuid() != 0:
        return "the SLURM tests start munged, slurmctld and slurmd and need root"
    hosts_missing = netns.missing()
    if hosts_missing:
        return hosts_missing
    absent = [name for name in (*PROGRAMS, "sbatch", "scontrol") if shutil.which(name) is None]
    if absent:
        return (f"SLURM is not installed ({', '.join(absent)} missing: "
                "apt-get install slurm-wlm slurmdbd munge mariadb-server)")  # fmt: skip
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _dbd_conf(folder: Path, socket_path: Path, dbd_port: int, database_port: int) -> str:
    return f"""AuthType=auth/munge
AuthInfo=socket={socket_path}
DbdHost={CONTROLLER}
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
PidFile={folder}/slurmdbd.pid
LogFile={folder}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={database_port}
StorageUser=slurm
StoragePass={DATABASE_PASSWORD}
StorageLoc=slurm_acct_db
"""


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _conf(folder: Path, socket_path: Path, dbd_port: int, hosts: netns.Hosts) -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // len(hosts.names)
    nodes = "\n".join(
        f"NodeName={name} NodeAddr={address} CPUs={os.cpu_count()} RealMemory={memory} State=UNKNOWN"
        for name, address in zip(hosts.names, hosts.addresses, strict=True)
    )
    return f"""ClusterName=effv2
SlurmctldHost={CONTROLLER}({hosts.this_machine})
MailProg=/bin/true
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool-%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd-%n.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd-%n.log
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
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
AccountingStoragePass={socket_path}
JobAcctGatherType=jobacct_gather/none
{nodes}
PartitionName=debug Nodes={",".join(hosts.names)} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


class Cluster:
    def __init__(self, folder: Path, hosts: netns.Hosts) -> None:
        self.folder = folder
        self.hosts = hosts
        self.conf = folder / "slurm.conf"
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        for sub in ("state", "munge"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        munge = self.folder / "munge"
        dbd_port = _free_port()
        self.conf.write_text(_conf(self.folder, munge / "socket", dbd_port, self.hosts))
        os.environ["SLURM_CONF"] = str(self.conf)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._daemon(["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={munge / 'socket'}",
                      f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                      f"--seed-file={munge / 'seed'}"])  # fmt: skip
        self._database()
        dbd_conf = self.folder / "slurmdbd.conf"
        dbd_conf.write_text(_dbd_conf(self.folder, munge / "socket", dbd_port, self.database_port))
        dbd_conf.chmod(0o600)  # slurmdbd refuses a config others can read: it holds the password
        # slurmdbd takes slurmdbd.conf from the folder of $SLURM_CONF
        self._daemon(["slurmdbd", "-D"], ready=lambda: _listening(dbd_port))
        self._daemon(["slurmctld", "-D", "-i", "-f", str(self.conf)])
        for node, name in enumerate(self.hosts.names):
            (self.folder / f"spool-{name}").mkdir(exist_ok=True)
            self._daemon(self.hosts.on_host(node, ["slurmd", "-D", "-f", str(self.conf)]), name=f"slurmd-{name}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True).stdout.split()
            if len(states) == len(self.hosts.names) and all(s in ("idle", "mixed", "allocated") for s in states):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the SLURM nodes never became idle ({states!r}); logs in {self.folder}")

    def _database(self) -> None:
        """A MariaDB server of its own for slurmdbd, on a free port of 127.0.0.1."""
        data = self.folder / "mariadb"
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True)  # fmt: skip
        grants = self.folder / "grants.sql"
        grants.write_text(f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{DATABASE_PASSWORD}';\n"
                          "GRANT ALL ON *.* TO 'slurm'@'127.0.0.1';\n")  # fmt: skip
        self.database_port = _free_port()
        self._daemon(["mariadbd", "--no-defaults", f"--datadir={data}", "--user=root", "--bind-address=127.0.0.1",
                      f"--port={self.database_port}", f"--socket={self.folder / 'mariadb.sock'}",
                      f"--pid-file={self.folder / 'mariadb.pid'}", f"--init-file={grants}",
                      "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M"],
                     ready=lambda: _listening(self.database_port))  # fmt: skip

    def _daemon(self, command: list[str], ready: Callable[[], bool] | None = None, name: str = "") -> None:
        name = name or Path(command[0]).name
        log = (self.folder / f"{name}.out").open("w")
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + (30 if ready else 1.0)
        while time.monotonic() < deadline and self.processes[-1].poll() is None:
            if ready is not None and ready():
                return
            time.sleep(0.2)
        if self.processes[-1].poll() is not None or ready is not None:
            raise RuntimeError(f"{name} did not start: {(self.folder / f'{name}.out').read_text()[-2000:]}")

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
