#!/usr/bin/env bash
# Check mmbake on a CUDA machine in one command, within BUDGET seconds
# (default 540), and print a verdict with the figures of:
#   1. the GPU tests (tests/test_models/test_gpu.py: CUDA ensembling equals
#      the CPU's, also under fp16 autocast, CUDA graphs equal eager
#      execution, two ranks with global_ensemble on one GPU, graphs on and
#      off, against one CPU process), tests/test_compat.py and
#      tests/test_utils/test_checkpoint.py;
#   2. BAKEHead's paired step overhead over LinearClsHead, AMP, graphs on
#      and off (benchmarks/bake_overhead.py): ResNet-50, 224 px, 32 local
#      images, then the 8xb32 recipe's 256-image ensemble (224 rows handed
#      in where the gather would be).
# Usage: bash tools/gpu_check.sh [OUT_DIR] (the logs). Environment: PYTHON
# (python3), BUDGET, ROUNDS (step rounds, 40); where mmpretrain is missing,
# the wheels in .whl/ (or WHEELS) go to OUT_DIR/site (docs/benchmarks.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-work_dirs/gpu_check}
: "${PYTHON:=python3}" "${BUDGET:=540}" "${ROUNDS:=40}" "${WHEELS:=.whl}"
DEADLINE=$((SECONDS + BUDGET))
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check.sh: no CUDA device is visible to $PYTHON" >&2
    exit 2
fi
if ! "$PYTHON" -c 'import mmpretrain' 2> /dev/null; then
    if ! ls "$WHEELS"/*.whl > /dev/null 2>&1; then
        echo "gpu_check.sh: no mmpretrain installed, no wheels in $WHEELS/" >&2
        exit 2
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
        --target "$OUT_DIR/site" "$WHEELS"/*.whl || exit 2
    export PYTHONPATH="$PYTHONPATH:$OUT_DIR/site"
fi
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  "$PYTHON" -c 'import torch; print("torch", torch.__version__)'
  git rev-parse HEAD 2> /dev/null; } | tee "$OUT_DIR/machine.txt"

# step NAME COMMAND...: run within what is left of the budget, log to OUT_DIR
step() {
    local name=$1 left=$((DEADLINE - SECONDS)) && shift
    if [ "$left" -le 5 ]; then
        echo "gpu_check.sh: no time left for $name" | tee "$OUT_DIR/$name.log"
        return 124
    fi
    timeout "$left" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
}

# The benchmarks run even when a test fails; the exit status is the tests'.
step gpu_tests "$PYTHON" -m pytest tests/test_models/test_gpu.py \
    tests/test_compat.py tests/test_utils/test_checkpoint.py -v -n 0
tests_status=$?
for ranks in 1 8; do
    step "step_${ranks}x32" "$PYTHON" benchmarks/bake_overhead.py \
        --device cuda --skip-ensemble --amp --channels-last \
        --step-repeats "$ROUNDS" --simulate-ranks "$ranks" \
        --goals "$([ "$ranks" = 1 ] && echo 1 || echo 2)" 5
done

echo "== gpu_check.sh verdict ($SECONDS s, $(head -1 "$OUT_DIR/machine.txt"))"
tail -1 "$OUT_DIR/gpu_tests.log"
grep -h '^verdict:' "$OUT_DIR"/step_*.log
echo "tests exit status $tests_status"
exit "$tests_status"
