#!/usr/bin/env bash
# GPU checks of mmbake, meant to finish in under 5 minutes on one GPU:
#   1. the GPU tests (CUDA ensembling equals CPU, AMP fp16, an NCCL process
#      group, a fp16 training step) and the compatibility fixes, which must
#      stay off where a GPU is present;
#   2. the overhead benchmark on CUDA: knowledge_ensemble vs the explicit
#      inverse (B = 64 ... 4096), and a ResNet-50 step (224 px, batch 32,
#      AMP, channels_last) with BAKEHead (CUDA graphs on, and off) vs
#      LinearClsHead.
# Usage: bash tools/gpu_check.sh [OUT_DIR]   (figures go to OUT_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-work_dirs/gpu_check}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
if ! "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu_check.sh: no CUDA device is visible to $PYTHON" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
    | tee "$OUT_DIR/gpu.txt" || true
export PYTHONUNBUFFERED=1
# The benchmarks run even when a test fails; the script's exit status is
# the tests' status.
tests_status=0
"$PYTHON" -m pytest tests/test_models/test_gpu.py tests/test_compat.py -v -p no:cacheprovider \
    2>&1 | tee "$OUT_DIR/gpu_tests.log" || tests_status=$?
"$PYTHON" benchmarks/bake_overhead.py --device cuda --skip-step \
    --ensemble-repeats 20 --json "$OUT_DIR/ensemble_cuda.json" \
    2>&1 | tee "$OUT_DIR/ensemble_cuda.log"
"$PYTHON" benchmarks/bake_overhead.py --device cuda --skip-ensemble --amp \
    --channels-last --step-repeats 60 --json "$OUT_DIR/step_cuda_amp.json" \
    2>&1 | tee "$OUT_DIR/step_cuda_amp.log"
exit "$tests_status"
