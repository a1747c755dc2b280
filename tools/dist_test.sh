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
# shellcheck source=tools/launcher_checks.sh
. "$ROOT/tools/launcher_checks.sh"

usage() {
    echo "usage: $0 CONFIG CHECKPOINT GPUS [TEST_ARGS...]" >&2
    echo "  env: NNODES (1) NODE_RANK (0) MASTER_ADDR (127.0.0.1) PORT (29500) PYTHON (python)" >&2
}

if [ $# -lt 3 ]; then
    usage
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

require_file config "$CONFIG"
require_file checkpoint "$CHECKPOINT"
require_positive GPUS "$GPUS" 'processes on this machine'
require_non_negative NNODES NODE_RANK PORT

PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$ROOT/tools/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
