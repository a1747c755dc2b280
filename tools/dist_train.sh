#!/usr/bin/env bash
# tools/dist_train.sh CONFIG GPUS [TRAIN_ARGS...]: GPUS processes on this
# machine through torchrun (CPU processes over gloo where there is no CUDA).
# Multi-node: the same command on every node with NNODES, NODE_RANK,
# MASTER_ADDR and PORT set; PYTHON picks the interpreter.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=tools/launch_common.sh
. "$ROOT/tools/launch_common.sh"

[ $# -ge 2 ] || usage 'CONFIG GPUS [TRAIN_ARGS...]' "$TORCHRUN_ENV"
require_file config "$1"
launch_torchrun "$2" train.py "$1" --launcher pytorch "${@:3}"
