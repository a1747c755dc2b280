"""Bad input through the tools: one ``error:`` line, never a traceback.

Each case is a real command line run as the tool's ``main()`` in this
process: a BAKE setting out of range or misspelt, a dataset BAKE cannot
use or that is not there, labels the head has no class for (these two also
through ``tools/test.py`` and ``visualize_soft_targets.py``). Exit status 2,
one ``error:`` line naming the config key and the allowed values, before
training starts, the work dir's files untouched. Two documented warnings
train on. Bad command lines and resume files: ``test_train_test.py``;
errors only the Python API produces: ``docs/reliability.md``.
"""
import json
import math
import os.path as osp
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from .tool_runs import BAKE_CONFIG, REPO_ROOT, TEST, TRAIN

TOOLS = dict(
    train=TRAIN,
    test=TEST,
    visualize=osp.join(REPO_ROOT, 'tools', 'analysis_tools',
                       'visualize_soft_targets.py'))
HEAD, SAMPLER = 'model.head: ', 'train_dataloader.batch_sampler: '
PREPARE = ('. Prepare the dataset (docs/get_started.md, section "Data"), '
           'or set its path with --cfg-options {}.dataset.data_root=PATH')
MISSING = ': Cannot find FashionMNIST dataset in '
# yapf: disable
ERROR_CASES = {  # id: (tool, command-line additions, fragments of the line)
    'omega': ('train', ['model.head.omega=1.0'],
              [HEAD + 'omega must be a float in [0, 1), but got 1.0']),
    'temperature': ('train', ['model.head.temperature=0'],
                    [HEAD + 'temperature must be a float > 0, but got 0']),
    'bake_weight': ('train', ['model.head.bake_weight=-1'],
                    [HEAD + 'bake_weight must be a float >= 0, but got -1']),
    'ensemble_group_size': ('train', ['model.head.ensemble_group_size=0'], [
        HEAD + 'ensemble_group_size must be None or an int >= 1, but got 0']),
    'unsupported-head': ('train', ['model.head.type=BAKEDeiTClsHead'], [
        HEAD + 'BAKE does not support DeiTClsHead', 'Supported head types: '
        'BAKEHead, BAKEVisionTransformerClsHead, BAKEStackedLinearClsHead']),
    # The TypeError of the constructor call, named by its config key.
    'misspelt-argument': ('train', ['model.head.omgea=0.5'],
                          [HEAD, "unexpected keyword argument 'omgea'"]),
    'misspelt-dataset-argument': (
        'train', ['train_dataloader.dataset.num_splits=2'],
        ['train_dataloader.dataset: BaseDataset.__init__() got an '
         "unexpected keyword argument 'num_splits'"]),
    'misspelt-type': ('train', ['model.head.type=BAKEHaed'], [
        HEAD + 'BAKEHaed is not in the mmpretrain::model registry']),
    'num_instances': ('train', [
        'train_dataloader.batch_sampler.num_instances=0'],
        [SAMPLER + 'num_instances must be an int >= 1, got 0']),
    'batch_size-not-divisible': ('train', ['train_dataloader.batch_size=9'], [
        SAMPLER + 'batch_size (9) must be divisible by num_instances (2)']),
    'epoch_mode': ('train', [
        'train_dataloader.batch_sampler.epoch_mode=epochs'], [
        SAMPLER + "epoch_mode must be one of ('images', 'anchors'), got "
        "'epochs'"]),
    'multi-label-dataset': ('train', ['<multi_label>'], [
        SAMPLER + 'dataset MultiLabelDataset is multi-label',
        'ClassAwareBatchSampler needs a single-label dataset (one integer '
        'class index per sample)']),
    'dataset-without-labels': ('train', ['<no_label>'], [
        'has no label', 'ClassAwareBatchSampler needs a single-label']),
    'amp-float16-on-cpu': ('train', ['--amp', 'optim_wrapper.dtype=float16'], [
        "optim_wrapper.dtype must be 'bfloat16' (the only dtype of CPU "
        "autocast), but got 'float16'"]),
    # mmpretrain's FashionMNIST raises RuntimeError while it is built, for a
    # folder that is not there and one without the files alike.
    'data-not-there': ('train', ['<nowhere>'], [
        'train_dataloader.dataset' + MISSING, '/nowhere',
        PREPARE.format('train_dataloader')]),
    'data-files-not-there': ('train', ['<empty>'], [
        'train_dataloader.dataset' + MISSING, '/empty',
        PREPARE.format('train_dataloader')]),
    # Would be "IndexError: Target 7 is out of bounds" in the first step
    # (CheckLabelsHook, which the configs list).
    'labels-beyond-num_classes': ('train', ['model.head.num_classes=3'], [
        'train_dataloader.dataset has labels up to 9',
        'but model.head.num_classes is 3',
        'The dataset has 10 classes: set model.head.num_classes=10']),
    'test-data-not-there': ('test', ['<nowhere>'], [
        'test_dataloader.dataset' + MISSING,
        PREPARE.format('test_dataloader')]),
    'test-labels': ('test', ['model.head.num_classes=3'], [
        'test_dataloader.dataset has labels up to 9', 'num_classes is 3']),
    # Built with the test pipeline, yet named by its config key.
    'visualize-data-not-there': ('visualize', ['<nowhere>'], [
        'train_dataloader.dataset' + MISSING,
        PREPARE.format('train_dataloader')]),
    'visualize-labels': ('visualize', ['model.head.num_classes=3'], [
        'train_dataloader.dataset has labels up to ', 'num_classes is 3']),
}
# yapf: enable


def assert_one_error_line(result, fragments) -> None:
    """Exit status 2, no traceback, one ``error:`` line with each fragment."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    (line, ) = [x for x in result.stderr.splitlines() if x.startswith('error')]
    assert all(fragment in line for fragment in fragments), line


def dataset_config(tmp_path: Path, kind: str) -> str:
    """A BAKE config whose training set is multi-label or unlabelled
    (labels are read without loading images, which need not exist)."""
    labels = [[0, 1], [2], [1], [0]] if kind == 'multi_label' else [None] * 4
    ann_file = tmp_path / f'{kind}.json'
    ann_file.write_text(
        json.dumps(
            dict(
                metainfo=dict(classes=['a', 'b', 'c']),
                data_list=[
                    dict(
                        img_path='x.png',
                        **({} if y is None else dict(gt_label=y)))
                    for y in labels
                ])))
    dataset_type = 'MultiLabelDataset' if labels[0] else 'BaseDataset'
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
    loader = 'test_dataloader' if tool == 'test' else 'train_dataloader'
    for item in additions:
        if item in ('<nowhere>', '<empty>'):
            root = tmp_path / item.strip('<>')
            if item == '<empty>':
                root.mkdir()
            options.append(f'{loader}.dataset.data_root={root}')
        elif item.startswith('<'):
            config = dataset_config(tmp_path, item.strip('<>'))
        elif item.startswith('--'):
            args.append(item)
        else:
            options.append(item)
    # A work dir of an earlier run: a checkpoint, its pointer, a log.
    work_dir = tmp_path / 'work'
    (work_dir / 'log').mkdir(parents=True)
    (work_dir / 'log' / 'run.log').write_text('an earlier run')
    torch.save({'meta': dict(epoch=1, iter=20)}, work_dir / 'epoch_1.pth')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_1.pth'))
    before = snapshot(work_dir)
    if tool != 'train':
        checkpoint = str(tmp_path / 'weights.pth')
        torch.save({'state_dict': {}, 'meta': {}}, checkpoint)
        args.append(checkpoint)
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


def test_class_with_a_single_image_trains_with_a_warning(
        tmp_path, call_tool, tiny_cfg_options, fashion_mnist_small_root):
    labels = np.fromfile(
        osp.join(fashion_mnist_small_root, 'train-labels-idx1-ubyte'),
        np.uint8)[8:]
    # One image of the first image's class, three of every other class.
    single = int(labels[0])
    indices = [0] + [
        int(i) for c in range(10) if c != single
        for i in np.flatnonzero(labels == c)[:3]
    ]
    result = call_tool([
        sys.executable, TRAIN, BAKE_CONFIG, '--work-dir',
        str(tmp_path / 'work'), '--no-validate', '--cfg-options',
        *tiny_cfg_options,
        f'train_dataloader.dataset.indices={indices}'.replace(' ', '')
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    # Documented handling: the anchor is repeated as its own mate.
    assert ('ClassAwareBatchSampler: 1 class(es) have a single image, whose '
            f'anchor is repeated as its own mate: [{single}]') in \
        result.stderr
    assert 'Epoch(train) [1][2/2]' in result.stdout + result.stderr


def test_amp_without_gpu_and_without_class_aware_batches(
        tmp_path, call_tool, tiny_cfg_options):
    """``--amp`` without GPU: mmengine 0.10.7's AmpOptimWrapper asserts a
    GPU, so the tool picks BFloat16OptimWrapper (its autocast, and the
    float32 ensembling under it: test_bfloat16_optim_wrapper.py,
    test_knowledge_ensemble.py); losses stay finite. Without
    ClassAwareBatchSampler, BAKE warns and trains on."""
    result = call_tool([
        sys.executable, TRAIN, BAKE_CONFIG, '--amp', '--work-dir',
        str(tmp_path), '--no-validate', '--cfg-options', *tiny_cfg_options,
        'default_hooks.logger.interval=1',
        'train_dataloader.batch_sampler=None'
    ])
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert 'Final top-1' not in result.stdout  # validation was off
    assert 'mmbake: no GPU: optim_wrapper.type=BFloat16OptimWrapper' in out
    assert "type='BFloat16OptimWrapper'" in (
        tmp_path /
        osp.basename(BAKE_CONFIG)).read_text()  # the config the run dumped
    assert 'Epoch(train) [1][20/20]' in out  # 320 images, batch 16
    losses = [float(v) for v in re.findall(r' loss_bake: (\S+)', out)]
    assert len(losses) == 20 and all(map(math.isfinite, losses))
    assert max(losses) > 0
    assert 'BAKE: the first training batch does not look class-aware' in out
    assert ("batch_sampler=dict(type='ClassAwareBatchSampler', "
            'num_instances=2)') in out
