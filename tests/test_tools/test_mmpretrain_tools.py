"""mmpretrain's own, unchanged tools/train.py runs mmbake's configs.

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


def test_stock_train_runs_bake_config(stock_train, tmp_path, run_tool,
                                      tool_env, tiny_cfg_options):
    work_dir = str(tmp_path / 'work')
    # Not even the repository on the path: mmbake comes from the install.
    env = {k: v for k, v in tool_env.items() if k != 'PYTHONPATH'}
    result = run_tool([
        sys.executable, stock_train, BAKE_CONFIG, '--work-dir', work_dir,
        '--cfg-options', *tiny_cfg_options
    ],
                      cwd=str(tmp_path),
                      env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'loss_bake:' in log
    assert 'Epoch(val) [1][' in log and 'accuracy/top1:' in log
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))


@pytest.mark.dist
def test_stock_train_pytorch_launcher_on_cpu(stock_train, tmp_path, run_tool,
                                             tool_env, tiny_cfg_options):
    """``--launcher pytorch`` in one process: gloo init and DDP wrapping.

    On a CPU-only machine this needs both mmbake.compat fixes for mmengine
    (no ``torch.cuda.set_device``; no DDP ``device_ids`` for a CPU model).
    The environment is torchrun's for a world of one; a single process
    keeps the test free of the multi-process gloo exit abort, which the
    stock script does not guard against.
    """
    if torch.cuda.is_available():
        pytest.skip('checks the CPU-only path')
    env = dict(
        tool_env,
        RANK='0',
        LOCAL_RANK='0',
        WORLD_SIZE='1',
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=tool_env['PORT'])
    work_dir = str(tmp_path / 'work')
    result = run_tool([
        sys.executable, stock_train, BAKE_CONFIG, '--work-dir', work_dir,
        '--launcher', 'pytorch', '--cfg-options', *tiny_cfg_options
    ],
                      cwd=str(tmp_path),
                      env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert 'backend "gloo" instead of "nccl"' in log
    assert 'Distributed launcher: pytorch' in log
    # The runner took the distributed path (model wrapped in DDP).
    assert 'Distributed training is not used' not in log
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
