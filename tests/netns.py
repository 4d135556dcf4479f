"""Hosts on one machine for the multi-node tests: network namespaces, each with its own address,
on a bridge that also gives this machine (the root namespace) an address, so the namespaces
reach each other and the daemons that run here. A command runs "on" host k through
:func:`on_host`: in its network namespace, with its own host name (a UTS namespace) and an
``/etc/hosts`` (a mount namespace) that names every host, as on a cluster with DNS."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def missing() -> str | None:
    """Why no hosts can be made here, or None."""
    if os.geteuid() != 0 or any(shutil.which(tool) is None for tool in ("ip", "nsenter", "unshare")):
        return "the multi-node tests need root, iproute2 (ip netns), nsenter and unshare to give each node an address"
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _processes(namespace: str) -> list[int]:
    listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    return [int(pid) for pid in listed.stdout.split()]


@dataclass(frozen=True)
class Hosts:
    namespaces: list[str]
    names: list[str]  # host names: n0, n1, ...
    addresses: list[str]
    this_machine: str  # the root namespace's address on the bridge
    hosts_file: Path

    def processes(self, node: int) -> list[int]:
        """The processes that run on host ``node``."""
        return _processes(self.namespaces[node])

    def on_host(self, node: int, command: list[str]) -> list[str]:
        """``command`` as run on host ``node``."""
        setup = 'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"'
        # nsenter rather than `ip netns exec`, which mounts a fresh /sys without the cgroup file
        # systems that slurmd needs
        return ["nsenter", f"--net=/run/netns/{self.namespaces[node]}", "unshare", "--uts", "--mount", "sh", "-c",
                setup, "sh", self.names[node], str(self.hosts_file), *command]  # fmt: skip


@contextlib.contextmanager
def hosts(subnet: str, folder: Path, count: int = 2) -> Iterator[Hosts]:
    """``count`` hosts at <subnet>.1, .2, ... (this machine at <subnet>.254); removed after, with
    every process still running in them."""
    tag = f"{subnet.split('.')[-1]}x{os.getpid() % 10000}"  # interface names: 15 characters at most
    bridge, namespaces = f"eb{tag}", [f"effv2-{tag}-n{node}" for node in range(count)]
    made: list[str] = []
    try:
        _ip("link", "add", bridge, "type", "bridge")
        made.append("bridge")
        _ip("addr", "add", f"{subnet}.254/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for node, namespace in enumerate(namespaces):
            _ip("netns", "add", namespace)
            made.append(namespace)
            outside, inside = f"eh{node}{tag}", f"en{node}{tag}"
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", namespace)
            _ip("link", "set", outside, "master", bridge)
            _ip("link", "set", outside, "up")
            _ip("-n", namespace, "addr", "add", f"{subnet}.{node + 1}/24", "dev", inside)
            _ip("-n", namespace, "link", "set", inside, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        names = [f"n{node}" for node in range(count)]
        addresses = [f"{subnet}.{node + 1}" for node in range(count)]
        hosts_file = folder / "hosts"
        lines = ["127.0.0.1 localhost", f"{subnet}.254 {os.uname().nodename}"]
        hosts_file.write_text("\n".join([*lines, *(f"{a} {n}" for a, n in zip(addresses, names, strict=True))]) + "\n")
        yield Hosts(namespaces, names, addresses, f"{subnet}.254", hosts_file)
    finally:
        for namespace in namespaces:
            if namespace in made:  # nothing may outlive the tests: end what still runs there
                for pid in _processes(namespace):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        if "bridge" in made:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)
