#!/usr/bin/env bash
# Train on 8 or 16 Ascend 910 with a rank table (the seed's run_distribute_train_ascend.sh).
# usage: bash launchers/run_distribute_train_ascend.sh RANK_TABLE_FILE [NODE_RANK] [run.py overrides ...]
# Run it on every node with its NODE_RANK; the rank table decides 8p (1 server) or 16p (2 servers).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 RANK_TABLE_FILE [NODE_RANK] [overrides ...]" >&2; exit 2; }
table=$(realpath "$1"); shift
node_rank=0
if [ $# -ge 1 ] && [[ $1 =~ ^[0-9]+$ ]]; then node_rank=$1; shift; fi
servers=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['server_count'])" "$table")
hardware=ascend910_8p; [ "$servers" = "2" ] && hardware=ascend910_16p
cd "$(dirname "$0")/.."
exec python run.py task=train hardware=$hardware hardware.launch=rank_table hardware.rank_table="$table" \
  hardware.node_rank="$node_rank" "$@"
