#!/usr/bin/env bash
# tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [TRAIN_ARGS...]:
# one Slurm task per GPU (mmengine's slurm launcher needs CUDA).
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=tools/launch_common.sh
. "$ROOT/tools/launch_common.sh"
[ $# -ge 4 ] || usage 'PARTITION JOB_NAME CONFIG WORK_DIR [ARGS...]' "$SRUN_ENV"
require_file config "$3"
launch_srun "$1" "$2" train.py "$3" --work-dir="$4" --launcher=slurm "${@:5}"
