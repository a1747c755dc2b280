#!/usr/bin/env bash
# Test a checkpoint on a Slurm cluster: one task per GPU, GPUS tasks in all.
#
#   tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [TEST_ARGS...]
#
# env: GPUS (8, total), GPUS_PER_NODE (min(GPUS, 8)), CPUS_PER_TASK (5),
#      SRUN_ARGS (extra srun options), PYTHON (python).
# mmengine's slurm launcher needs CUDA on the nodes.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=tools/launcher_checks.sh
. "$ROOT/tools/launcher_checks.sh"

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

require_file config "$CONFIG"
require_file checkpoint "$CHECKPOINT"
require_positive GPUS "$GPUS" 'total GPUs'
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
require_positive GPUS_PER_NODE "$GPUS_PER_NODE"
require_srun slurm_test.sh tools/dist_test.sh

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
