"""``tools/train.py --amp`` without GPU: bfloat16 autocast, finite losses.

mmengine 0.10.7's ``AmpOptimWrapper`` asserts a GPU; ``tools/train.py``
picks mmbake's ``BFloat16OptimWrapper`` there. The ensembling inside the
head runs in float32 whatever autocast does: ``tests/test_models/
test_utils/test_knowledge_ensemble.py::
test_no_autograd_and_float32_under_bf16_autocast`` and ``tests/
test_models/test_heads/test_bake_heads.py::
test_bf16_autocast_gives_finite_losses``; ``tests/test_engine/
test_optimizers/test_bfloat16_optim_wrapper.py`` checks that the wrapper's
context really autocasts to bfloat16.
"""
import glob
import json
import math
import os.path as osp
import sys

from mmengine.config import Config

from .tool_runs import BAKE_CONFIG, TRAIN


def test_amp_without_gpu_trains_with_finite_losses(tmp_path, call_tool,
                                                   tiny_cfg_options):
    work_dir = str(tmp_path / 'work')
    # No GPU visible (conftest.py: call_tool is a GPU-less subprocess where
    # CUDA is visible).
    result = call_tool([
        sys.executable, TRAIN, BAKE_CONFIG, '--amp', '--work-dir', work_dir,
        '--no-validate', '--cfg-options', *tiny_cfg_options,
        'default_hooks.logger.interval=1'
    ])
    assert result.returncode == 0, result.stderr[-3000:]

    dumped = Config.fromfile(osp.join(work_dir, osp.basename(BAKE_CONFIG)))
    assert dumped.optim_wrapper.type == 'BFloat16OptimWrapper'
    assert 'dtype' not in dumped.optim_wrapper

    logs = [
        path
        for path in glob.glob(osp.join(work_dir, '*', 'vis_data', '*.json'))
        if not path.endswith('scalars.json')
    ]
    assert len(logs) == 1, logs
    with open(logs[0]) as f:
        records = [json.loads(line) for line in f if 'loss_ce' in line]
    # 320 images, batch 16: one record per iteration.
    assert len(records) == 20
    for record in records:
        for key in ('loss', 'loss_ce', 'loss_bake'):
            assert math.isfinite(record[key]), record
    assert any(record['loss_bake'] > 0 for record in records)
