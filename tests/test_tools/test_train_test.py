"""tools/train.py and tools/test.py on real Fashion-MNIST images: one
training of a plain mmpretrain config (mmengine's own CheckpointHook) in a
fresh interpreter, whose checkpoints the tests resume, test, publish and
calibrate through the tools in this process; bad command lines."""
import json
import os.path as osp
import pickle
import re
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO_ROOT, run_probe, tiny_options
from tests.identity_snapshot import report
from tests.test_reliability.tool_runs import (BAKE_CONFIG, TEST, TRAIN,
                                              assert_same_weights,
                                              load_checkpoint)

RELEASED = osp.join(REPO_ROOT, 'checkpoints',
                    'bake_resnet18_1xb64_fashion-mnist_20261204-44c299b6.pth')
# mmpretrain's bases (its runtime: seed None, mmengine's CheckpointHook, all
# checkpoints kept), Fashion-MNIST (one channel), BAKE's two pieces; the
# network a quarter as wide (as the Fashion-MNIST configs), 10x faster.
STOCK_CONFIG = """_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py', {data!r}]
custom_imports = dict(imports=['mmbake'], allow_failed_imports=False)
model = dict(
    backbone=dict(in_channels=1, stem_channels=16, base_channels=16),
    head=dict(type='BAKEHead', in_channels=128))
train_dataloader = dict(
    batch_sampler=dict(type='ClassAwareBatchSampler', num_instances=2))
"""


def final_top1(stdout: str, epoch: int = 2) -> float:
    """The top-1 of the train tool's last line, which names ``epoch``."""
    found = re.findall(rf'^Final top-1 \(val, epoch {epoch}\): (\d+\.\d\d)$',
                       stdout, re.MULTILINE)
    assert found, stdout[-3000:]
    return float(found[-1])


@pytest.fixture(scope='module')
def stock(tmp_path_factory, fashion_mnist_small_root, mmbake_modules) -> dict:
    """The two-epoch run (64 training images, 4 steps an epoch) under the
    identity snapshot. Reproducible on resume: ``deterministic=True``; one
    worker, not persistent, so that each epoch starts one that mmengine's
    ``worker_init_fn`` seeds from (seed, rank, worker id): the random
    transforms draw from numpy's global RNG of the loading process, whose
    state after a resume, in the main process, would differ."""
    tmp = tmp_path_factory.mktemp('stock')
    config = tmp / 'stock_bake.py'
    config.write_text(
        STOCK_CONFIG.format(
            data=osp.join(REPO_ROOT, 'configs', '_base_', 'datasets',
                          'fashion_mnist.py')))
    # 64 images: one of the first image's class (a class with a single
    # image), 7 of every other class.
    labels = np.fromfile(
        osp.join(fashion_mnist_small_root, 'train-labels-idx1-ubyte'),
        np.uint8)[8:]
    indices = [0] + [
        int(i) for c in range(10) if c != labels[0]
        for i in np.flatnonzero(labels == c)[:7]
    ]
    options = tiny_options(fashion_mnist_small_root) + [
        f'train_dataloader.dataset.indices={indices}'.replace(
            ' ', ''), 'train_cfg.max_epochs=2',
        'train_dataloader.num_workers=1', 'randomness.deterministic=True'
    ]
    work_dir = str(tmp / 'work')
    result = run_probe('--preload', mmbake_modules, '--', TRAIN, str(config),
                       '--work-dir', work_dir, '--cfg-options', *options)
    return dict(
        single=int(labels[0]),
        config=str(config),
        result=result,
        options=options,
        checkpoint=work_dir + '/epoch_{}.pth')


def needs_scope(path: str) -> bool:
    """Whether ``path`` holds types this process does not allow (today's
    SafeCheckpointHook leaves its scope open if a run fails early)."""
    return bool(torch.serialization.get_unsafe_globals_in_checkpoint(path))


def on_stock(call_tool, stock, script, *args):
    """``script`` (``TRAIN``, ``TEST``) on the stock config, in-process."""
    return call_tool([
        sys.executable, script, stock['config'], *args, '--cfg-options',
        *stock['options']
    ])


def test_stock_config_trains_with_bake_and_replaces_nothing(stock):
    out = stock['result'].stdout + stock['result'].stderr
    assert 'loss_ce:' in out and 'loss_bake:' in out
    assert 'Epoch(train) [2][4/4]' in out
    # Documented: a single image's anchor is repeated as its own mate.
    assert ('ClassAwareBatchSampler: 1 class(es) have a single image, whose '
            'anchor is repeated as its own mate: '
            f"[{stock['single']}]") in out
    assert 0 <= final_top1(stock['result'].stdout) <= 100
    found = report(stock['result'].stdout)
    assert (found['replaced'], found['added'],
            found['allowlist_changed']) == ([], [], False)


def allowed_checkpoint_types() -> set:
    """Which of ``checkpoint_globals()``'s types torch's allowlist holds
    (torch itself adds entries as its modules load: compare only these)."""
    from mmbake.utils import checkpoint_safe_globals
    allowed = set(torch.serialization.get_safe_globals())
    return {entry for entry in checkpoint_safe_globals() if entry in allowed}


def test_resume_reaches_the_same_weights(stock, call_tool, tmp_path):
    """From epoch 1 of mmengine's CheckpointHook (loaded, as the log says,
    inside checkpoint_globals()) to the epoch-2 weights, with its seed."""
    allowlist = allowed_checkpoint_types()
    first = stock['checkpoint'].format(1)
    scoped = needs_scope(first)
    resumed = on_stock(call_tool, stock, TRAIN, '--work-dir', str(tmp_path),
                       '--resume', first)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert 'resumed epoch: 1' in out and 'Epoch(train) [1]' not in out
    seed = load_checkpoint(first)['meta']['seed']
    assert f'Resuming with the seed of the checkpoint, {seed}' in out
    assert bool(
        re.search(
            rf'mmbake: {first} holds .*mmengine\.logging\.history_buffer\.'
            r'HistoryBuffer.*: loaded inside checkpoint_globals\(\)',
            out)) == scoped
    assert_same_weights(stock['checkpoint'].format(2),
                        str(tmp_path / 'epoch_2.pth'))
    assert final_top1(resumed.stdout) == final_top1(stock['result'].stdout)
    assert allowed_checkpoint_types() == allowlist


def test_an_error_inside_the_load_scope_keeps_its_traceback(
        stock, call_tool, tmp_path):
    """A missing Pretrained ``init_cfg`` fails while the scope is open
    (``_init_model_weights``, before the load); no check anticipates it."""
    allowlist, missing = allowed_checkpoint_types(), tmp_path / 'x'
    first = stock['checkpoint'].format(1)
    scoped, init = needs_scope(first), 'model.backbone.init_cfg'
    result = on_stock(call_tool, stock, TRAIN, '--work-dir', str(tmp_path),
                      '--resume', first, '--cfg-options',
                      f'{init}.type=Pretrained',
                      f'{init}.checkpoint={missing}')
    assert result.returncode == 1
    assert ('loaded inside checkpoint_globals()' in result.stdout) == scoped
    assert 'Traceback (most recent call last)' in result.stderr
    assert f'FileNotFoundError: {missing}' in result.stderr
    assert allowed_checkpoint_types() == allowlist


def test_test_tool_on_the_test_images(stock, call_tool, tmp_path):
    checkpoint = stock['checkpoint'].format(2)
    preds, show_dir = str(tmp_path / 'preds.pkl'), tmp_path / 'vis'
    tested = on_stock(call_tool, stock, TEST, checkpoint, '--work-dir',
                      str(tmp_path), '--out', preds, '--show-dir',
                      str(show_dir), '--interval', '50')
    assert tested.returncode == 0, tested.stderr[-3000:]
    top1 = float(
        re.search(r'^Test top-1: (\d+\.\d\d)$', tested.stdout,
                  re.MULTILINE).group(1))
    # The test split is the val split: the same weights, the same top-1.
    assert top1 == final_top1(stock['result'].stdout)
    with open(preds, 'rb') as f:
        predictions = pickle.load(f)
    # Every one of the 200 real *test* images, not the training images.
    assert sorted(p['sample_idx'] for p in predictions) == list(range(200))
    assert {'pred_label', 'pred_score', 'gt_label'} <= set(predictions[0])
    assert len(list(show_dir.glob('*.png'))) == 4  # 0, 50, 100 and 150

    metrics = str(tmp_path / 'metrics.json')
    tested = on_stock(call_tool, stock, TEST, checkpoint, '--work-dir',
                      str(tmp_path), '--out', metrics, '--out-item', 'metrics')
    assert tested.returncode == 0, tested.stderr[-3000:]
    with open(metrics) as f:
        assert json.load(f)['accuracy/top1'] == pytest.approx(top1, abs=5e-3)


@pytest.mark.parametrize('kind', ['released', 'release', 'calibrated'])
def test_resume_refuses_what_is_not_a_training_checkpoint(
        kind, stock, call_tool, tmp_path, tmp_path_factory,
        fashion_mnist_small_root):
    """The zoo's file and what publish_model.py (``release``) and
    calibrate.py write (the shared BAKE run's) keep meta ``epoch`` and
    ``iter``, not ``message_hub``: one line."""
    from tests.test_engine.test_hooks.bake_run import bake_run

    path = RELEASED if kind == 'released' else bake_run(
        tmp_path_factory, fashion_mnist_small_root)[kind]
    meta = torch.load(path, weights_only=True)['meta']
    assert {'epoch', 'iter'} <= set(meta)
    work_dir = tmp_path / 'work'
    result = on_stock(call_tool, stock, TRAIN, '--work-dir', str(work_dir),
                      '--resume', path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert (f'error: --resume: {path} is not a training checkpoint of '
            "mmengine's runner") in result.stderr
    assert f'use --cfg-options load_from={path} without --resume' in \
        result.stderr
    assert not work_dir.exists()


@pytest.mark.parametrize('tool,args,message', [
    (TRAIN, ['nope.py'], 'error: config file not found: nope.py'),
    (TEST, ['nope.py', 'x.pth'], 'error: config file not found: nope.py'),
    (TEST, [BAKE_CONFIG, 'x.pth'], 'error: checkpoint file not found: x.pth'),
    (TRAIN, [BAKE_CONFIG, '--launcher', 'magic'], "invalid choice: 'magic'"),
    (TEST, [BAKE_CONFIG, RELEASED, '--launcher', 'magic'], 'invalid choice'),
    (TRAIN, [BAKE_CONFIG, '--resume', 'x.pth'], 'resume file not found: x'),
    (TRAIN, [BAKE_CONFIG, '--launcher', 'pytorch'], 'tools/dist_train.sh'),
    (TEST, [BAKE_CONFIG, RELEASED, '--out', 'p.json'], 'must end with one of'),
    (TEST, [BAKE_CONFIG, RELEASED, '--interval', '0'], 'must be >= 1, got 0'),
    (TRAIN, ['<odd>', '--auto-scale-lr'], 'needs auto_scale_lr in the config'),
    (TEST, ['<odd>', RELEASED, '--show-dir', 'x'], 'needs default_hooks.'),
])
def test_bad_command_line_is_a_clear_error(tool, args, message, call_tool,
                                           run_tool, tmp_path):
    # <odd>: the BAKE config without auto_scale_lr and visualization hook.
    odd = tmp_path / 'odd.py'
    odd.write_text(f'_base_ = [{BAKE_CONFIG!r}]\nauto_scale_lr = None\n'
                   'default_hooks = dict(visualization=None)\n')
    args = [str(odd) if a == '<odd>' else a for a in args]
    # The first case in a real process: the exit status a shell sees.
    run = run_tool if args == ['nope.py'] else call_tool
    result = run([sys.executable, tool, *args])
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr and 'Traceback' not in result.stderr
