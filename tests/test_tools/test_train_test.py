"""tools/train.py and tools/test.py on real Fashion-MNIST images.

One run goes train -> checkpoint -> ``--resume`` -> ``test.py`` through the
real command lines, in new interpreters, on the small real data root (320
train / 200 test images at 28 px), one epoch at a time; the other runs call
the tools' ``main()`` in this process (``call_tool``), and one bad command
line is a real process again, for the exit status a shell sees.
"""
import json
import os.path as osp
import pickle
import re
import sys

import pytest

from tests.identity_snapshot import report

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST = osp.join(REPO_ROOT, 'tools', 'test.py')
PLAIN_CONFIG = osp.join(REPO_ROOT, 'configs', 'fashion_mnist',
                        'resnet18_1xb64-vanilla_fashion-mnist.py')
BAKE_CONFIG = osp.join(REPO_ROOT, 'configs', 'bake',
                       'resnet18_1xb64_fashion-mnist.py')
FINAL_LINE = re.compile(r'^Final top-1 \(val, epoch (\d+)\): (\d+\.\d\d)$',
                        re.MULTILINE)


def final_top1(stdout: str) -> tuple:
    """Return (epoch, top-1) from the train tool's last report line."""
    matches = FINAL_LINE.findall(stdout)
    assert matches, f'no "Final top-1" line in:\n{stdout[-3000:]}'
    epoch, top1 = matches[-1]
    return int(epoch), float(top1)


# A plain mmpretrain config: stock bases, the Fashion-MNIST data (one
# channel), mmbake loaded, and BAKE's two pieces swapped in; no opt-in.
STOCK_CONFIG = """
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
    {data!r},
]
custom_imports = dict(imports=['mmbake'], allow_failed_imports=False)
model = dict(backbone=dict(in_channels=1), head=dict(type='BAKEHead'))
train_dataloader = dict(
    batch_sampler=dict(type='ClassAwareBatchSampler', num_instances=2))
"""


def test_stock_config_trains_resumes_and_tests(tmp_path, run_tool, call_tool,
                                               tiny_cfg_options,
                                               mmbake_modules):
    """Train, ``--resume`` (mmengine's CheckpointHook made
    SafeCheckpointHook: weights-only loading), each in a new interpreter,
    and test; the identity snapshot shows that neither run replaced
    anything."""
    config = tmp_path / 'stock_bake.py'
    config.write_text(
        STOCK_CONFIG.format(
            data=osp.join(REPO_ROOT, 'configs', '_base_', 'datasets',
                          'fashion_mnist.py')))
    work_dir = str(tmp_path / 'work')
    probe = [
        sys.executable, '-m', 'tests.identity_snapshot', '--preload',
        mmbake_modules, '--', TRAIN,
        str(config), '--work-dir', work_dir
    ]
    # mmpretrain's full-width CIFAR ResNet-18: 64 training images (4 steps).
    small = [*tiny_cfg_options, 'train_dataloader.dataset.indices=64']
    first = run_tool([*probe, '--cfg-options', *small])
    assert first.returncode == 0, first.stderr[-3000:]
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    # Both loss terms of the BAKE head reach the log.
    log = first.stdout + first.stderr
    assert 'loss_ce:' in log and 'loss_bake:' in log
    epoch, top1 = final_top1(first.stdout)
    assert epoch == 1 and 0.0 <= top1 <= 100.0
    found = report(first.stdout)
    assert found['replaced'] == [] and found['added'] == []

    # --resume without a path continues from the work dir's last
    # checkpoint, which torch reads with its weights-only default.
    resumed = run_tool([
        *probe, '--resume', '--cfg-options', *small, 'train_cfg.max_epochs=2'
    ])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 1' in log
    assert 'Epoch(train) [1]' not in log  # epoch 1 was not trained again
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))
    assert final_top1(resumed.stdout)[0] == 2
    found = report(resumed.stdout)
    assert found['replaced'] == [] and found['added'] == []
    assert not found['allowlist_changed']

    out = str(tmp_path / 'preds.pkl')
    tested = call_tool([
        sys.executable, TEST,
        str(config),
        osp.join(work_dir, 'epoch_2.pth'), '--work-dir',
        str(tmp_path / 'test'), '--out', out, '--cfg-options',
        *tiny_cfg_options
    ])
    assert tested.returncode == 0, tested.stderr[-3000:]
    test_top1 = float(
        re.search(r'^Test top-1: (\d+\.\d\d)$', tested.stdout,
                  re.MULTILINE).group(1))
    # The test split is the val split: the same weights give the same top-1.
    assert test_top1 == final_top1(resumed.stdout)[1]
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    # Every one of the 200 real *test* images, not the training images.
    assert len(predictions) == 200
    assert sorted(p['sample_idx'] for p in predictions) == list(range(200))
    assert {'pred_label', 'pred_score', 'gt_label'} <= set(predictions[0])


def test_resume_from_explicit_checkpoint(tmp_path, call_tool,
                                         tiny_cfg_options):
    first_dir, second_dir = str(tmp_path / 'a'), str(tmp_path / 'b')
    first = call_tool([
        sys.executable, TRAIN, PLAIN_CONFIG, '--work-dir', first_dir,
        '--cfg-options', *tiny_cfg_options
    ])
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = osp.join(first_dir, 'epoch_1.pth')

    resumed = call_tool([
        sys.executable, TRAIN, PLAIN_CONFIG, '--work-dir', second_dir,
        '--resume', checkpoint, '--cfg-options', *tiny_cfg_options,
        'train_cfg.max_epochs=2'
    ])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 1' in resumed.stdout + resumed.stderr
    assert osp.isfile(osp.join(second_dir, 'epoch_2.pth'))


def test_test_tool_dumps_metrics(tmp_path, call_tool, tiny_cfg_options):
    work_dir = str(tmp_path / 'work')
    trained = call_tool([
        sys.executable, TRAIN, PLAIN_CONFIG, '--work-dir', work_dir,
        '--no-validate', '--cfg-options', *tiny_cfg_options
    ])
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert 'Final top-1' not in trained.stdout  # validation was off

    out = str(tmp_path / 'metrics.json')
    show_dir = tmp_path / 'vis'
    tested = call_tool([
        sys.executable, TEST, PLAIN_CONFIG,
        osp.join(work_dir, 'epoch_1.pth'), '--work-dir',
        str(tmp_path / 'test'), '--out', out, '--out-item', 'metrics',
        '--show-dir',
        str(show_dir), '--interval', '50', '--cfg-options', *tiny_cfg_options
    ])
    assert tested.returncode == 0, tested.stderr[-3000:]
    with open(out) as f:
        metrics = json.load(f)
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0
    # Samples 0, 50, 100 and 150 of the 200 test images are drawn.
    assert len(list(show_dir.glob('*.png'))) == 4


@pytest.mark.parametrize('tool', [TRAIN, TEST])
def test_missing_config_is_a_clear_error(tool, tmp_path, call_tool):
    args = [str(tmp_path / 'nope.py')]
    if tool == TEST:
        args.append(str(tmp_path / 'nope.pth'))
    result = call_tool([sys.executable, tool, *args], timeout=60)
    assert result.returncode == 2
    assert 'config file not found' in result.stderr
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('tool', [TRAIN, TEST])
def test_unknown_launcher_is_a_clear_error(tool, tmp_path, call_tool):
    args = [PLAIN_CONFIG] + ([PLAIN_CONFIG] if tool == TEST else [])
    result = call_tool([sys.executable, tool, *args, '--launcher', 'magic'],
                       timeout=60)
    assert result.returncode == 2
    assert "invalid choice: 'magic'" in result.stderr
    assert 'Traceback' not in result.stderr


def test_bad_resume_path_is_a_clear_error(tmp_path, call_tool):
    missing = str(tmp_path / 'missing.pth')
    result = call_tool(
        [sys.executable, TRAIN, PLAIN_CONFIG, '--resume', missing], timeout=60)
    assert result.returncode == 2
    assert f'--resume checkpoint not found: {missing}' in result.stderr
    assert 'Traceback' not in result.stderr


def test_pytorch_launcher_outside_torchrun_is_a_clear_error(
        run_tool, tool_env):
    env = {k: v for k, v in tool_env.items() if k != 'RANK'}
    result = run_tool(
        [sys.executable, TRAIN, PLAIN_CONFIG, '--launcher', 'pytorch'],
        timeout=60,
        env=env)
    assert result.returncode == 2
    assert 'tools/dist_train.sh' in result.stderr
    assert 'Traceback' not in result.stderr


def test_test_tool_bad_inputs(tmp_path, call_tool):
    missing = str(tmp_path / 'missing.pth')
    result = call_tool([sys.executable, TEST, PLAIN_CONFIG, missing],
                       timeout=60)
    assert result.returncode == 2
    assert f'checkpoint file not found: {missing}' in result.stderr
    assert 'Traceback' not in result.stderr

    # Predictions go to a pickle only (mmengine's DumpResults).
    result = call_tool([
        sys.executable, TEST, PLAIN_CONFIG, PLAIN_CONFIG, '--out',
        str(tmp_path / 'preds.json')
    ],
                       timeout=60)
    assert result.returncode == 2
    assert 'must end with one of' in result.stderr
    assert 'Traceback' not in result.stderr
