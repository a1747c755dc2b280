"""Bad input through the tools, run in this process: a BAKE setting out of
range or misspelt, a dataset BAKE cannot use or that is not there, labels
the head has no class for (also through test.py and visualize_soft_targets
.py): exit status 2, one ``error:`` line naming the config key and allowed
values, before training, the work dir untouched. Bad command lines, resume
files: test_train_test.py; the Python API's errors: docs/reliability.md.
"""
import json
import math
import os.path as osp
import re
import sys
from pathlib import Path

import pytest
import torch

from .tool_runs import BAKE_CONFIG, REPO_ROOT, TEST, TRAIN

VISUALIZE = 'tools/analysis_tools/visualize_soft_targets.py'
TOOLS = dict(train=TRAIN, test=TEST, visualize=osp.join(REPO_ROOT, VISUALIZE))
H, S, T = 'model.head: ', 'train_dataloader.batch_sampler: ', 'train'
READ = ('.dataset: Cannot find FashionMNIST dataset in ', '. Prepare the '
        'dataset (docs/get_started.md, section "Data"), or set its path with '
        '--cfg-options {}.dataset.data_root=PATH')
ROOT = '.dataset.data_root={tmp}'  # a folder without the files, or none
LABELS = ('.dataset has labels up to 9', 'but model.head.num_classes is 3')
# yapf: disable
ERROR_CASES = {  # id: (tool, additions, fragments of the error line)
    'omega': (T, ['model.head.omega=1.0'],
              [H + 'omega must be a float in [0, 1), but got 1.0']),
    'temperature': (T, ['model.head.temperature=0'],
                    [H + 'temperature must be a float > 0, but got 0']),
    'bake_weight': (T, ['model.head.bake_weight=-1'],
                    [H + 'bake_weight must be a float >= 0, but got -1']),
    'ensemble_group_size': (T, ['model.head.ensemble_group_size=0'], [
        H + 'ensemble_group_size must be None or an int >= 1, but got 0']),
    'unsupported-head': (T, ['model.head.type=BAKEDeiTClsHead'], [
        H + 'BAKE does not support DeiTClsHead', 'Supported head types: '
        'BAKEHead, BAKEVisionTransformerClsHead, BAKEStackedLinearClsHead']),
    # The TypeError of the constructor call, named by its config key.
    'misspelt-argument': (T, ['model.head.omgea=0.5'],
                          [H, "unexpected keyword argument 'omgea'"]),
    'misspelt-dataset-argument': (T, [
        'train_dataloader.dataset.num_splits=2'], [
        'train_dataloader.dataset: BaseDataset.__init__() got an unexpected '
        "keyword argument 'num_splits'"]),
    'misspelt-type': (T, ['model.head.type=BAKEHaed'], [
        H + 'BAKEHaed is not in the mmpretrain::model registry']),
    'num_instances': (T, ['train_dataloader.batch_sampler.num_instances=0'],
                      [S + 'num_instances must be an int >= 1, got 0']),
    'batch_size-not-divisible': (T, ['train_dataloader.batch_size=9'], [
        S + 'batch_size (9) must be divisible by num_instances (2)']),
    'epoch_mode': (T, ['train_dataloader.batch_sampler.epoch_mode=x'], [
        S + "epoch_mode must be one of ('images', 'anchors'), got 'x'"]),
    'multi-label-dataset': (T, ['<multi_label>'], [
        S + 'dataset MultiLabelDataset is multi-label', 'ClassAwareBatch'
        'Sampler needs a single-label dataset (one integer class index']),
    'dataset-without-labels': (T, ['<no_label>'], [
        'has no label', 'ClassAwareBatchSampler needs a single-label']),
    'amp-float16-on-cpu': (T, ['--amp', 'optim_wrapper.dtype=float16'], [
        "optim_wrapper.dtype must be 'bfloat16' (the only dtype of CPU "
        "autocast), but got 'float16'"]),
    # mmpretrain's FashionMNIST raises RuntimeError while it is built, for a
    # folder that is not there and one without the files alike.
    'data-not-there': (T, ['train_dataloader' + ROOT + '/nowhere'], [
        'train_dataloader' + READ[0], '/nowhere',
        READ[1].format('train_dataloader')]),
    'data-files-not-there': (T, ['train_dataloader' + ROOT], [
        'train_dataloader' + READ[0]]),
    # CheckLabelsHook; else "IndexError: Target 7 is out of bounds" later.
    'labels-beyond-num_classes': (T, ['model.head.num_classes=3'], [
        'train_dataloader' + LABELS[0], LABELS[1],
        'The dataset has 10 classes: set model.head.num_classes=10']),
    'test-data-not-there': ('test', ['test_dataloader' + ROOT + '/x'], [
        'test_dataloader' + READ[0], READ[1].format('test_dataloader')]),
    'test-labels': ('test', ['model.head.num_classes=3'], [
        'test_dataloader' + LABELS[0], LABELS[1]]),
    # Built with the test pipeline, yet named by its config key.
    'visualize-data-not-there': ('visualize', ['train_dataloader' + ROOT], [
        'train_dataloader' + READ[0], READ[1].format('train_dataloader')]),
    'visualize-labels': ('visualize', ['model.head.num_classes=3'], [
        'train_dataloader.dataset has labels up to ', LABELS[1]]),
}
# yapf: enable


def assert_one_error_line(result, fragments) -> None:
    """Exit status 2, no traceback, one ``error:`` line with each fragment."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    (line, ) = [x for x in result.stderr.splitlines() if x.startswith('error')]
    assert all(fragment in line for fragment in fragments), line


def dataset_config(tmp_path: Path, kind: str) -> str:
    """A BAKE config with a multi-label or unlabelled training set."""
    multi = kind == 'multi_label'
    data_list = [
        dict(img_path='x.png', gt_label=y) for y in ([0, 1], [2], [1], [0])
    ] if multi else [dict(img_path='x.png')] * 4
    ann_file = tmp_path / f'{kind}.json'
    ann_file.write_text(
        json.dumps(
            dict(metainfo=dict(classes=['a', 'b', 'c']), data_list=data_list)))
    dataset_type = 'MultiLabelDataset' if multi else 'BaseDataset'
    config = tmp_path / f'bake_{kind}.py'
    config.write_text(f'_base_ = [{BAKE_CONFIG!r}]\n'
                      'train_dataloader = dict(dataset=dict(_delete_=True, '
                      f'type={dataset_type!r}, ann_file={str(ann_file)!r}, '
                      f'data_root={str(tmp_path)!r}))\n')
    return str(config)


def snapshot(folder: Path) -> dict:
    """Every file under ``folder``: its bytes and modification time."""
    return {
        p: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in folder.rglob('*') if p.is_file()
    }


@pytest.mark.parametrize('case_id', list(ERROR_CASES))
def test_bad_input_is_a_clear_error(case_id, tmp_path, call_tool,
                                    tiny_cfg_options):
    tool, additions, fragments = ERROR_CASES[case_id]
    config, args, options = BAKE_CONFIG, [], []
    for item in (item.format(tmp=tmp_path) for item in additions):
        if item.startswith('<'):
            config = dataset_config(tmp_path, item.strip('<>'))
        else:
            (args if item.startswith('--') else options).append(item)
    # A work dir of an earlier run: a checkpoint, its pointer, a log.
    work_dir = tmp_path / 'work'
    (work_dir / 'log').mkdir(parents=True)
    (work_dir / 'log' / 'run.log').write_text('an earlier run')
    torch.save({'meta': dict(epoch=1, iter=20)}, work_dir / 'epoch_1.pth')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_1.pth'))
    before = snapshot(work_dir)
    if tool != 'train':
        torch.save({'state_dict': {}}, tmp_path / 'weights.pth')
        args.append(str(tmp_path / 'weights.pth'))
    args += ['--out-dir', str(tmp_path / 'out')] if tool == 'visualize' \
        else ['--work-dir', str(work_dir)]

    # No GPU is visible (conftest.py), so --amp means bfloat16 everywhere.
    result = call_tool([
        sys.executable, TOOLS[tool], config, *args, '--cfg-options',
        *tiny_cfg_options, *options
    ])

    assert_one_error_line(result, fragments)
    after = snapshot(work_dir)
    assert {k: after.get(k) for k in before} == before
    assert not [k for k in after if k.suffix == '.pth' and k not in before]


def test_debug_env_shows_the_traceback(tmp_path, call_tool, tiny_cfg_options,
                                       monkeypatch):
    monkeypatch.setenv('MMBAKE_DEBUG', '1')
    result = call_tool([
        sys.executable, TRAIN, BAKE_CONFIG, '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *tiny_cfg_options,
        'model.head.omega=1.0'
    ])
    assert result.returncode == 1
    assert 'Traceback (most recent call last)' in result.stderr
    assert 'ValueError: omega must be a float in [0, 1)' in result.stderr


def test_amp_without_gpu_and_without_class_aware_batches(
        tmp_path, call_tool, tiny_cfg_options):
    """mmengine 0.10.7's AmpOptimWrapper asserts a GPU: BFloat16OptimWrapper
    (its autocast: test_bfloat16_optim_wrapper.py), finite losses; without
    ClassAwareBatchSampler, BAKE warns and trains on."""
    result = call_tool([
        sys.executable,
        TRAIN,
        BAKE_CONFIG,
        '--amp',
        '--work-dir',
        str(tmp_path),
        '--no-validate',
        '--cfg-options',
        *tiny_cfg_options,
        'default_hooks.logger.interval=1',
        'train_dataloader.batch_sampler=None',
        'train_dataloader.dataset.indices=96',  # bfloat16 is slow on a CPU
        'train_dataloader.persistent_workers=True'  # without workers
    ])
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert 'Final top-1' not in result.stdout  # validation was off
    assert 'mmbake: no GPU: optim_wrapper.type=BFloat16OptimWrapper' in out
    dumped = (tmp_path / osp.basename(BAKE_CONFIG)).read_text()
    assert "type='BFloat16OptimWrapper'" in dumped
    assert 'mmbake: train_dataloader.persistent_workers=False (torch' in out
    assert 'Epoch(train) [1][6/6]' in out  # 96 images, batch 16
    losses = [float(v) for v in re.findall(r' loss_bake: (\S+)', out)]
    assert len(losses) == 6 and all(map(math.isfinite, losses)) and any(losses)
    assert 'BAKE: the first training batch does not look class-aware' in out
    assert ("batch_sampler=dict(type='ClassAwareBatchSampler', "
            'num_instances=2)') in out
