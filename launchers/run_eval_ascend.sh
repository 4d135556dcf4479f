#!/usr/bin/env bash
# Evaluate a checkpoint on one Ascend 910 (the seed's run_eval_ascend.sh).
# usage: bash launchers/run_eval_ascend.sh DEVICE_ID CHECKPOINT [run.py overrides ...]
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 DEVICE_ID CHECKPOINT [overrides ...]" >&2; exit 2; }
export DEVICE_ID=$1; ckpt=$(realpath "$2"); shift 2
cd "$(dirname "$0")/.."
exec python run.py task=eval hardware=ascend910_1p ckpt="$ckpt" "$@"
