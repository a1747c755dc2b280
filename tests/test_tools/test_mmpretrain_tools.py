"""mmpretrain's own, unchanged tools/train.py runs mmbake's configs.

The stock script (shipped in the mmpretrain package under ``.mim/tools``)
never imports mmbake: the config's ``custom_imports`` does. The BAKE config
is used because its ``BAKEHead`` and ``ClassAwareBatchSampler`` resolve only
after that import.
"""
import os
import os.path as osp
import sys

import mmpretrain
import pytest
import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
STOCK_TRAIN = osp.join(
    osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py')
BAKE_CONFIG = osp.join(REPO_ROOT, 'configs', 'bake',
                       'resnet18_1xb64_fashion-mnist.py')


@pytest.fixture
def stock_train() -> str:
    if not osp.isfile(STOCK_TRAIN):
        pytest.skip(f'mmpretrain ships no {STOCK_TRAIN} in this install')
    return STOCK_TRAIN


@pytest.mark.dist
def test_stock_train_launches_trains_and_resumes(stock_train, tmp_path,
                                                 run_tool, tool_env,
                                                 tiny_cfg_options):
    """``--launcher pytorch`` in one process, then ``--resume`` with torch's
    weights-only loading on.

    On a CPU-only machine mmengine's launcher calls ``torch.cuda.set_device``
    and gives DDP ``device_ids`` for a CPU model; the opt-in
    ``mmbake.compat``, listed in ``custom_imports``, replaces both. The
    environment is torchrun's for a world of one; a single process keeps
    the test free of the multi-process gloo exit abort, which the stock
    script does not guard against. The resume, without launcher or opt-in:
    the config's SafeCheckpointHook lets torch read the runner's own
    checkpoint (mmengine's CheckpointHook would stop at HistoryBuffer).
    """
    if torch.cuda.is_available():
        pytest.skip('checks the CPU-only path')
    # Not even the repository on the path: mmbake comes from the install.
    env = {k: v for k, v in tool_env.items() if k != 'PYTHONPATH'}
    launched = dict(
        env,
        RANK='0',
        LOCAL_RANK='0',
        WORLD_SIZE='1',
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=tool_env['PORT'])
    work_dir = str(tmp_path / 'work')
    # The opt-in where a user sees it: in the config (the stock tool
    # imports custom_imports when it loads the file).
    config = tmp_path / 'bake_with_compat.py'
    config.write_text(f'_base_ = [{BAKE_CONFIG!r}]\n'
                      "custom_imports = dict(imports=['mmbake', "
                      "'mmbake.compat'], allow_failed_imports=False)\n")
    result = run_tool([
        sys.executable, stock_train,
        str(config), '--work-dir', work_dir, '--launcher', 'pytorch',
        '--cfg-options', *tiny_cfg_options
    ],
                      cwd=str(tmp_path),
                      env=launched)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'mmbake.compat: replaced mmengine.dist.utils._init_dist_pytorch' \
        in log
    assert 'backend "gloo" instead of "nccl"' in log
    assert 'Distributed launcher: pytorch' in log
    # The runner took the distributed path (model wrapped in DDP).
    assert 'Distributed training is not used' not in log
    assert 'loss_bake:' in log
    assert 'Epoch(val) [1][' in log and 'accuracy/top1:' in log
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))

    resumed = run_tool([
        sys.executable, stock_train, BAKE_CONFIG, '--work-dir', work_dir,
        '--resume', '--cfg-options', *tiny_cfg_options,
        'train_cfg.max_epochs=2'
    ],
                       cwd=str(tmp_path),
                       env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 1' in log and 'Epoch(val) [2][' in log
    # One checkpoint kept (max_keep_ckpts=1), deleted after the new one.
    assert sorted(os.listdir(work_dir)).count('epoch_2.pth') == 1
    assert not osp.exists(osp.join(work_dir, 'epoch_1.pth'))
