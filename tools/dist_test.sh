#!/usr/bin/env bash
# tools/dist_test.sh CONFIG CHECKPOINT GPUS [TEST_ARGS...]: as dist_train.sh.
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
