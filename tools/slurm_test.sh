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
# shellcheck source=tools/launch_common.sh
. "$ROOT/tools/launch_common.sh"

if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [TEST_ARGS...]" >&2
    echo "  env: $SRUN_ENV" >&2
    exit 2
fi
require_file config "$3"
require_file checkpoint "$4"
launch_srun "$1" "$2" test.py "$3" "$4" --launcher=slurm "${@:5}"
