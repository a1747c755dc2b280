#!/usr/bin/env bash
# tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [TEST_ARGS...]:
# as slurm_train.sh.
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
