"""mmpretrain's own, unchanged tools/train.py runs and resumes mmbake's
configs (its tools/test.py: test_safe_checkpoint_hook.py).

The stock script (shipped in the mmpretrain package under ``.mim/tools``)
never imports mmbake: the config's ``custom_imports`` does. The BAKE config
is used because its ``BAKEHead`` and ``ClassAwareBatchSampler`` resolve only
after that import.
"""
import os.path as osp
import sys

import mmpretrain
import pytest
import torch

from tests.test_engine.test_hooks.bake_run import bake_run
from tests.test_reliability.tool_runs import assert_same_weights

STOCK_TRAIN = osp.join(
    osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py')


@pytest.mark.dist
def test_stock_train_launches_and_resumes(tmp_path, tmp_path_factory,
                                          fashion_mnist_small_root, run_tool,
                                          tool_env):
    """``--launcher pytorch --resume`` from the shared run's epoch 1, in a
    world of one (no multi-process gloo exit abort, which the stock script
    does not guard against). Without GPU, mmengine's launcher calls
    ``torch.cuda.set_device`` and gives DDP ``device_ids`` for a CPU model;
    ``mmbake.compat``, listed in ``custom_imports``, replaces both. torch's
    weights-only default reads the checkpoint; SafeCheckpointHook rebuilds
    the message hub and drops ``meta['config']``, which ``Runner.resume``
    would execute; epoch 2 ends with the uninterrupted run's weights.
    """
    if not osp.isfile(STOCK_TRAIN):
        pytest.skip(f'mmpretrain ships no {STOCK_TRAIN} in this install')
    if torch.cuda.is_available():
        pytest.skip('checks the CPU-only path')
    run = bake_run(tmp_path_factory, fashion_mnist_small_root)
    launched = dict(tool_env, RANK='0', LOCAL_RANK='0', WORLD_SIZE='1')
    launched.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=tool_env['PORT'])
    # The opt-in where a user sees it: in the config (the stock tool
    # imports custom_imports when it loads the file).
    config = tmp_path / 'bake_with_compat.py'
    config.write_text(f'_base_ = [{run["config"]!r}]\n'
                      "custom_imports = dict(imports=['mmbake', "
                      "'mmbake.compat'], allow_failed_imports=False)\n")
    checkpoint, marker = torch.load(run['epoch_1']), tmp_path / 'code_ran'
    checkpoint['meta']['config'] = f'open({str(marker)!r}, "w").close()\n'
    resume_from, work_dir = str(tmp_path / 'epoch_1.pth'), str(tmp_path / 'w')
    torch.save(checkpoint, resume_from)
    cmd = [sys.executable, STOCK_TRAIN, str(config), '--work-dir', work_dir]
    cmd += ['--launcher', 'pytorch', '--resume', resume_from]
    result = run_tool(cmd, cwd=str(tmp_path), env=launched)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'mmbake.compat: replaced mmengine.dist.utils._init_dist_pytorch' \
        in log
    assert 'backend "gloo" instead of "nccl"' in log
    assert 'Distributed launcher: pytorch' in log
    # The runner took the distributed path (model wrapped in DDP).
    assert 'Distributed training is not used' not in log
    assert 'resumed epoch: 1' in log and 'is not HistoryBuffer' not in log
    assert "ignoring meta['config']" in log and not marker.exists()
    assert 'loss_bake:' in log
    assert 'Epoch(val) [2][' in log and 'accuracy/top1:' in log
    assert_same_weights(osp.join(work_dir, 'epoch_2.pth'), run['epoch_2'])
