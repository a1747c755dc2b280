#!/usr/bin/env bash
# tools/dist_train.sh CONFIG GPUS [TRAIN_ARGS...]: GPUS processes here
# through torchrun (over gloo without CUDA); multi-node: the same command on
# every node with NNODES, NODE_RANK, MASTER_ADDR and PORT set.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=tools/launch_common.sh
. "$ROOT/tools/launch_common.sh"
[ $# -ge 2 ] || usage 'CONFIG GPUS [TRAIN_ARGS...]' "$TORCHRUN_ENV"
require_file config "$1"
launch_torchrun "$2" train.py "$1" --launcher pytorch "${@:3}"
