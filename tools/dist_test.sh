#!/usr/bin/env bash
# Test a checkpoint with several processes on one or more machines (torchrun).
#
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [TEST_ARGS...]
#
# GPUS is the number of processes on this machine: one per GPU with CUDA
# (NCCL), or that many CPU processes over gloo where there is no CUDA.
# Multi-node: run the same command on every node with NNODES, NODE_RANK,
# MASTER_ADDR and PORT set. PYTHON picks the interpreter (default: python).
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=tools/launch_common.sh
. "$ROOT/tools/launch_common.sh"

if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [TEST_ARGS...]" >&2
    echo "  env: $TORCHRUN_ENV" >&2
    exit 2
fi
require_file config "$1"
require_file checkpoint "$2"
launch_torchrun "$3" test.py "$1" "$2" --launcher pytorch "${@:4}"
