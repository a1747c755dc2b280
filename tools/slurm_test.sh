#!/usr/bin/env bash
# Test a checkpoint on a Slurm cluster: one task per GPU, GPUS tasks in all.
#
#   tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [TEST_ARGS...]
#
# env: GPUS (8, total), GPUS_PER_NODE (min(GPUS, 8)), CPUS_PER_TASK (5),
#      SRUN_ARGS (extra srun options), PYTHON (python).
# mmengine's slurm launcher needs CUDA on the nodes.
set -u

if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [TEST_ARGS...]" >&2
    echo "  env: GPUS (8) GPUS_PER_NODE (min(GPUS,8)) CPUS_PER_TASK (5) SRUN_ARGS PYTHON (python)" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
GPUS=${GPUS:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}

if [ ! -f "$CONFIG" ]; then
    echo "error: config file not found: $CONFIG" >&2
    exit 2
fi
if [ ! -f "$CHECKPOINT" ]; then
    echo "error: checkpoint file not found: $CHECKPOINT" >&2
    exit 2
fi
if ! [[ "$GPUS" =~ ^[0-9]+$ ]] || [ "$GPUS" -lt 1 ]; then
    echo "error: GPUS must be a positive integer (total GPUs), got '$GPUS'" >&2
    exit 2
fi
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
if ! [[ "$GPUS_PER_NODE" =~ ^[0-9]+$ ]] || [ "$GPUS_PER_NODE" -lt 1 ]; then
    echo "error: GPUS_PER_NODE must be a positive integer, got '$GPUS_PER_NODE'" >&2
    exit 2
fi
if ! command -v srun > /dev/null 2>&1; then
    echo "error: srun not found: slurm_test.sh needs a Slurm cluster; use tools/dist_test.sh elsewhere" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# SRUN_ARGS is split into words on purpose (several srun options).
# shellcheck disable=SC2086
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" \
    --launcher=slurm "${@:5}"
