"""Write an HCCL rank table (JSON, version 1.0) for Ascend 910 hosts, as hccl_tools does.

Each server contributes its device IPs, read from its /etc/hccn.conf (lines ``address_<id>=<ip>``,
as ``hccn_tool`` writes them):

    python launchers/rank_table.py --server 10.0.0.1:/etc/hccn.conf --server 10.0.0.2:node2_hccn.conf \\
        --devices 0-7 --out rank_table_16p.json

Then: ``python run.py task=train hardware=ascend910_16p hardware.launch=rank_table
hardware.rank_table=rank_table_16p.json hardware.node_rank=<this node>``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def parse_devices(text: str) -> list[int]:
    if "-" in text:
        first, last = (int(v) for v in text.split("-"))
        return list(range(first, last + 1))
    return [int(v) for v in text.split(",")]


def read_hccn_conf(path: Path) -> dict[int, str]:
    addresses = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"\s*address_(\d+)\s*=\s*([\d.]+)\s*", line)
        if match:
            addresses[int(match.group(1))] = match.group(2)
    return addresses


def build_rank_table(servers: list[tuple[str, Path]], devices: list[int]) -> dict:
    server_list, rank = [], 0
    for server_ip, conf in servers:
        addresses = read_hccn_conf(conf)
        missing = [d for d in devices if d not in addresses]
        if missing:
            raise ValueError(f"{conf} has no address_<id> line for devices {missing}")
        entries = []
        for device in devices:
            entries.append({"device_id": str(device), "device_ip": addresses[device], "rank_id": str(rank)})
            rank += 1
        server_list.append({"server_id": server_ip, "device": entries, "host_nic_ip": "reserve"})
    return {"version": "1.0", "server_count": str(len(servers)), "server_list": server_list, "status": "completed"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", action="append", required=True, help="HOST_IP:PATH_TO_HCCN_CONF, once per node")
    parser.add_argument("--devices", default="0-7", help="device ids per node: 0-7 or 0,1,2,3")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    servers = []
    for item in args.server:
        host, _, conf = item.partition(":")
        if not conf:
            parser.error(f"--server {item!r} must be HOST_IP:PATH_TO_HCCN_CONF")
        servers.append((host, Path(conf)))
    try:
        table = build_rank_table(servers, parse_devices(args.devices))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    Path(args.out).write_text(json.dumps(table, indent=2) + "\n")
    print(f"wrote {args.out}: {len(servers)} servers, {sum(len(s['device']) for s in table['server_list'])} ranks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
