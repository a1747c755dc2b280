#!/usr/bin/env bash
# tools/dist_test.sh CONFIG CHECKPOINT GPUS [TEST_ARGS...]: as dist_train.sh.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=tools/launch_common.sh
. "$ROOT/tools/launch_common.sh"
[ $# -ge 3 ] || usage 'CONFIG CHECKPOINT GPUS [TEST_ARGS...]' "$TORCHRUN_ENV"
require_file config "$1"
require_file checkpoint "$2"
launch_torchrun "$3" test.py "$1" "$2" --launcher pytorch "${@:4}"
