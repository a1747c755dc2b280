#!/usr/bin/env bash
# tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [TEST_ARGS...]:
# as slurm_train.sh.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=tools/launch_common.sh
. "$ROOT/tools/launch_common.sh"
[ $# -ge 4 ] || usage 'PARTITION JOB_NAME CONFIG CHECKPOINT [ARGS...]' "$SRUN_ENV"
require_file config "$3"
require_file checkpoint "$4"
launch_srun "$1" "$2" test.py "$3" "$4" --launcher=slurm "${@:5}"
