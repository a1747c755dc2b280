"""tools/train.py and tools/test.py on real Fashion-MNIST images.

One training of a plain mmpretrain config (stock bases, so mmengine's own
``CheckpointHook``; BAKE's head and sampler swapped in) runs two epochs in
a fresh interpreter under the identity snapshot; the tests resume, test,
publish and calibrate its checkpoints through the tools' ``main()`` in this
process (``call_tool``). Bad command lines are checked alongside.
"""
import glob
import json
import os.path as osp
import pickle
import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT, probe_environment, tiny_options
from tests.identity_snapshot import report
from tests.test_reliability.tool_runs import (assert_same_weights,
                                              load_checkpoint)

TOOLS = osp.join(REPO_ROOT, 'tools')
TRAIN, TEST = osp.join(TOOLS, 'train.py'), osp.join(TOOLS, 'test.py')
BAKE_CONFIG = osp.join(REPO_ROOT, 'configs', 'bake',
                       'resnet18_1xb64_fashion-mnist.py')
RELEASED = osp.join(REPO_ROOT, 'checkpoints',
                    'bake_resnet18_1xb64_fashion-mnist_20261204-44c299b6.pth')
# A plain mmpretrain config: stock bases (mmpretrain's runtime: seed None,
# mmengine's CheckpointHook, every checkpoint kept), the Fashion-MNIST data
# (one channel), mmbake loaded and BAKE's two pieces swapped in.
STOCK_CONFIG = """_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py', {data!r}]
custom_imports = dict(imports=['mmbake'], allow_failed_imports=False)
model = dict(backbone=dict(in_channels=1), head=dict(type='BAKEHead'))
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
    """The two-epoch run (64 training images, 4 steps an epoch) in a fresh
    interpreter, under the identity snapshot (``tests/identity_snapshot
    .py``). Reproducible on resume: ``deterministic=True`` on the CPU, and
    one dataloader worker, not persistent, so that every epoch starts a
    worker that mmengine's ``worker_init_fn`` seeds from (seed, rank,
    worker id): the random transforms draw from numpy's global RNG in the
    loading process, which with ``num_workers=0`` is the main process,
    whose RNG state after a resume differs from the uninterrupted run's."""
    tmp = tmp_path_factory.mktemp('stock')
    config = tmp / 'stock_bake.py'
    config.write_text(
        STOCK_CONFIG.format(
            data=osp.join(REPO_ROOT, 'configs', '_base_', 'datasets',
                          'fashion_mnist.py')))
    options = tiny_options(fashion_mnist_small_root) + [
        'train_dataloader.dataset.indices=64', 'train_cfg.max_epochs=2',
        'train_dataloader.num_workers=1', 'randomness.deterministic=True'
    ]
    work_dir = str(tmp / 'work')
    result = subprocess.run([
        sys.executable, '-m', 'tests.identity_snapshot', '--preload',
        mmbake_modules, '--', TRAIN,
        str(config), '--work-dir', work_dir, '--cfg-options', *options
    ],
                            cwd=REPO_ROOT,
                            env=probe_environment(),
                            capture_output=True,
                            text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(
        config=str(config),
        options=options,
        work_dir=work_dir,
        result=result,
        checkpoint=osp.join(work_dir, 'epoch_{}.pth'))


def test_stock_config_trains_with_bake_and_replaces_nothing(stock):
    out = stock['result'].stdout + stock['result'].stderr
    assert 'loss_ce:' in out and 'loss_bake:' in out
    assert 0 <= final_top1(stock['result'].stdout) <= 100
    found = report(stock['result'].stdout)
    assert found['replaced'] == [] and found['added'] == []
    assert not found['allowlist_changed']


def test_resume_reaches_the_same_weights(stock, call_tool, tmp_path):
    """From epoch 1 of mmengine's CheckpointHook (HistoryBuffers, numpy
    values: read inside checkpoint_globals(), said in the log) to the
    uninterrupted run's epoch-2 weights, with the checkpoint's seed."""
    allowlist = torch.serialization.get_safe_globals()
    first = stock['checkpoint'].format(1)
    resumed = call_tool([
        sys.executable, TRAIN, stock['config'], '--work-dir',
        str(tmp_path), '--resume', first, '--cfg-options', *stock['options']
    ])
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert 'resumed epoch: 1' in out and 'Epoch(train) [1]' not in out
    seed = load_checkpoint(first)['meta']['seed']
    assert f'Resuming with the seed of the checkpoint, {seed}' in out
    assert re.search(
        rf'mmbake: {first} holds .*mmengine\.logging\.history_buffer\.'
        r'HistoryBuffer.*: loaded inside checkpoint_globals\(\)', out)
    assert_same_weights(stock['checkpoint'].format(2),
                        str(tmp_path / 'epoch_2.pth'))
    assert final_top1(resumed.stdout) == final_top1(stock['result'].stdout)
    assert torch.serialization.get_safe_globals() == allowlist


def test_an_error_inside_the_load_scope_keeps_its_traceback(
        stock, call_tool, tmp_path):
    """A Pretrained ``init_cfg`` that is not there fails while the scope is
    open (``_init_model_weights``, between ``before_run`` and the load): no
    check anticipates it, so the traceback stays; the allowlist is restored.
    """
    allowlist = torch.serialization.get_safe_globals()
    result = call_tool([
        sys.executable, TRAIN, stock['config'], '--work-dir',
        str(tmp_path), '--resume', stock['checkpoint'].format(1),
        '--cfg-options', *stock['options'],
        'model.backbone.init_cfg.type=Pretrained',
        f'model.backbone.init_cfg.checkpoint={tmp_path / "none.pth"}'
    ])
    assert result.returncode == 1
    assert 'loaded inside checkpoint_globals()' in result.stdout
    assert 'Traceback (most recent call last)' in result.stderr
    assert f'FileNotFoundError: {tmp_path / "none.pth"}' in result.stderr
    assert torch.serialization.get_safe_globals() == allowlist


def test_test_tool_on_the_test_images(stock, call_tool, tmp_path):
    checkpoint = stock['checkpoint'].format(2)
    preds, show_dir = str(tmp_path / 'preds.pkl'), tmp_path / 'vis'
    tested = call_tool([
        sys.executable, TEST, stock['config'], checkpoint, '--work-dir',
        str(tmp_path), '--out', preds, '--show-dir',
        str(show_dir), '--interval', '50', '--cfg-options', *stock['options']
    ])
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert 'loaded inside checkpoint_globals()' in tested.stdout
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
    # Samples 0, 50, 100 and 150 are drawn.
    assert len(list(show_dir.glob('*.png'))) == 4

    metrics = str(tmp_path / 'metrics.json')
    tested = call_tool([
        sys.executable, TEST, stock['config'], checkpoint, '--work-dir',
        str(tmp_path), '--out', metrics, '--out-item', 'metrics',
        '--cfg-options', *stock['options']
    ])
    assert tested.returncode == 0, tested.stderr[-3000:]
    with open(metrics) as f:
        assert json.load(f)['accuracy/top1'] == pytest.approx(top1, abs=5e-3)


@pytest.mark.parametrize('kind', ['released', 'published', 'calibrated'])
def test_resume_refuses_what_is_not_a_training_checkpoint(
        kind, stock, call_tool, tmp_path):
    """The zoo's file, and what publish_model.py and calibrate.py write,
    keep ``meta`` ``epoch`` and ``iter`` but no ``message_hub``: one line
    that names ``load_from``, before anything is built."""
    path, trained = RELEASED, stock['checkpoint'].format(2)
    if kind == 'published':
        made = call_tool([
            sys.executable,
            osp.join(TOOLS, 'model_converters', 'publish_model.py'), trained,
            str(tmp_path / 'published.pth')
        ])
        (path, ) = glob.glob(str(tmp_path / 'published_*.pth'))
    elif kind == 'calibrated':
        path = str(tmp_path / 'calibrated.pth')
        made = call_tool([
            sys.executable,
            osp.join(TOOLS, 'analysis_tools', 'calibrate.py'), stock['config'],
            trained, '--out', path, '--cfg-options', *stock['options']
        ])
    assert kind == 'released' or made.returncode == 0, made.stderr[-3000:]
    meta = torch.load(path, weights_only=True)['meta']
    assert {'epoch', 'iter'} <= set(meta)
    work_dir = tmp_path / 'work'
    result = call_tool([
        sys.executable, TRAIN, stock['config'], '--work-dir',
        str(work_dir), '--resume', path, '--cfg-options', *stock['options']
    ])
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert (f'error: --resume: {path} is not a training checkpoint of '
            "mmengine's runner") in result.stderr
    assert f'use --cfg-options load_from={path} without --resume' in \
        result.stderr
    assert not work_dir.exists()


@pytest.fixture(scope='module')
def odd_config(tmp_path_factory) -> str:
    """The BAKE config without ``auto_scale_lr`` and visualization hook."""
    path = tmp_path_factory.mktemp('odd') / 'odd.py'
    path.write_text(f'_base_ = [{BAKE_CONFIG!r}]\nauto_scale_lr = None\n'
                    'default_hooks = dict(visualization=None)\n')
    return str(path)


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
                                           odd_config):
    args = [odd_config if a == '<odd>' else a for a in args]
    result = call_tool([sys.executable, tool, *args])
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr and 'Traceback' not in result.stderr


def test_bad_command_line_exit_status_in_a_shell(run_tool):
    result = run_tool([sys.executable, TRAIN, 'nope.py'], timeout=120)
    assert result.returncode == 2
    assert 'error: config file not found: nope.py' in result.stderr
