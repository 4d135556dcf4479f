#!/usr/bin/env bash
# Train on one Ascend 910 (the seed's run_standalone_train_ascend.sh).
# usage: bash launchers/run_standalone_train_ascend.sh DEVICE_ID [run.py overrides ...]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DEVICE_ID [overrides ...]" >&2; exit 2; }
export DEVICE_ID=$1; shift
cd "$(dirname "$0")/.."
exec python run.py task=train hardware=ascend910_1p "$@"
