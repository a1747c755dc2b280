#!/usr/bin/env bash
# GPU checks of mmbake in one script, bounded by BUDGET seconds (default
# 300: with a machine's start, a rerun still fits in 15 minutes):
#   1. the GPU tests: CUDA ensembling equals CPU, AMP fp16, NCCL, CUDA
#      graphs equal eager execution, and two ranks training BAKEHead with
#      global_ensemble=True on the one GPU (gloo with CUDA tensors; NCCL
#      where there are two GPUs), graphs on and off, against one CPU
#      process; plus the compatibility fixes, which must stay off there;
#   2. benchmarks/bake_overhead.py on CUDA: knowledge_ensemble vs the
#      explicit inverse; the ResNet-50 step (224 px, batch 32, AMP,
#      channels_last) with BAKEHead (graphs on and off), LinearClsHead and
#      a control, paired per round: first with the local batch of 32, then
#      ensembled over 8 x 32 images as each rank of the 8xb32 recipe does.
# Usage: bash tools/gpu_check.sh [OUT_DIR]   (logs and JSON go to OUT_DIR)
# Environment: PYTHON (python3), BUDGET (seconds), ROUNDS (step rounds, 40).
# On a machine without the mm packages, install them first, e.g. from
# wheels: pip install --no-deps --target /tmp/site .whl/*.whl and
# PYTHONPATH=/tmp/site (docs/benchmarks.md, "GPU figures").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-work_dirs/gpu_check}
PYTHON=${PYTHON:-python3}
BUDGET=${BUDGET:-300}
ROUNDS=${ROUNDS:-40}
DEADLINE=$((SECONDS + BUDGET))
mkdir -p "$OUT_DIR"
if ! "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check.sh: no CUDA device is visible to $PYTHON" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
    | tee "$OUT_DIR/gpu.txt"
git rev-parse HEAD 2> /dev/null | tee "$OUT_DIR/commit.txt"
export PYTHONUNBUFFERED=1

# step NAME COMMAND...: run within what is left of the budget, log to OUT_DIR
step() {
    local name=$1 left=$((DEADLINE - SECONDS))
    shift
    if [ "$left" -le 5 ]; then
        echo "gpu_check.sh: no time left for $name" | tee "$OUT_DIR/$name.log"
        return 124
    fi
    timeout "$left" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
}

# The benchmarks run even when a test fails; the exit status is the tests'.
step gpu_tests "$PYTHON" -m pytest tests/test_models/test_gpu.py \
    tests/test_compat.py -v -p no:cacheprovider
tests_status=$?
step ensemble_cuda "$PYTHON" benchmarks/bake_overhead.py --device cuda \
    --skip-step --ensemble-repeats 10 --json "$OUT_DIR/ensemble_cuda.json"
step step_local32 "$PYTHON" benchmarks/bake_overhead.py --device cuda \
    --skip-ensemble --amp --channels-last --step-repeats "$ROUNDS" \
    --json "$OUT_DIR/step_local32.json"
step step_8xb32 "$PYTHON" benchmarks/bake_overhead.py --device cuda \
    --skip-ensemble --amp --channels-last --step-repeats "$ROUNDS" \
    --simulate-ranks 8 --json "$OUT_DIR/step_8xb32.json"
echo "gpu_check.sh: done in $SECONDS s, tests exit status $tests_status"
exit "$tests_status"
