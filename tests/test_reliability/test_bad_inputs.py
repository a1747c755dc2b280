"""Bad input through ``tools/train.py``: a clear message, never a traceback.

Each case is one real command line, as a user types it, run as the tool's
``main()`` in this process: a BAKE setting out of range given with
``--cfg-options``, a dataset BAKE cannot use, a dataset that is not there,
or labels the head has no class for (the last two also through
``tools/test.py`` and ``visualize_soft_targets.py``). The tool must exit
with status 2 and print ``error: <message>`` naming the parameter and the
allowed values, print no traceback, end within seconds (the runner builds
the model, dataloaders and optimizer before training), and leave the files
already in the work dir (a checkpoint, its pointer, a log folder)
untouched. Two cases are documented warnings, not errors: the run trains
and says why BAKE works less well. In a new interpreter: the
``MMBAKE_DEBUG`` case here (exit status 1, the traceback), and a bad
command line in ``tests/test_tools/test_train_test.py`` (exit status 2).

Errors that only the Python API can produce (feature sizes that differ
across ranks, non-finite logits) are covered where that API is tested; see
the table in ``docs/reliability.md``.
"""
import hashlib
import json
import os
import os.path as osp
import sys
from typing import Dict, Tuple

import numpy as np
import pytest
import torch

from .tool_runs import BAKE_CONFIG, REPO_ROOT, TEST, TRAIN

VISUALIZE = osp.join(REPO_ROOT, 'tools', 'analysis_tools',
                     'visualize_soft_targets.py')

ERROR_CASES = {
    # id: (command-line additions, fragments that the message must hold)
    'omega': (['model.head.omega=1.0'],
              ['omega must be a float in [0, 1), but got 1.0']),
    'temperature': (['model.head.temperature=0'],
                    ['temperature must be a float > 0, but got 0']),
    'bake_weight': (['model.head.bake_weight=-1'],
                    ['bake_weight must be a float >= 0, but got -1']),
    'ensemble_group_size':
    (['model.head.ensemble_group_size=0'],
     ['ensemble_group_size must be None or an int >= 1, but got 0']),
    'unsupported-head': (['model.head.type=BAKEDeiTClsHead'], [
        'BAKE does not support DeiTClsHead',
        'Supported head types: BAKEHead, BAKEVisionTransformerClsHead, '
        'BAKEStackedLinearClsHead'
    ]),
    'misspelt-argument': (['model.head.omgea=0.5'],
                          ["unexpected keyword argument 'omgea'"]),
    'misspelt-type': (['model.head.type=BAKEHaed'],
                      ['BAKEHaed is not in the mmpretrain::model registry']),
    'num_instances': (['train_dataloader.batch_sampler.num_instances=0'],
                      ['num_instances must be an int >= 1, got 0']),
    'batch_size-not-divisible':
    (['train_dataloader.batch_size=9'],
     ['batch_size (9) must be divisible by num_instances (2)']),
    'epoch_mode':
    (['train_dataloader.batch_sampler.epoch_mode=epochs'],
     ["epoch_mode must be one of ('images', 'anchors'), got 'epochs'"]),
    'multi-label-dataset': (['<multi_label>'], [
        'dataset MultiLabelDataset is multi-label',
        'ClassAwareBatchSampler needs a single-label dataset (one integer '
        'class index per sample)'
    ]),
    'dataset-without-labels':
    (['<no_label>'],
     ['has no label', 'ClassAwareBatchSampler needs a single-label dataset']),
    'resume-from-published-weights': (['<published>'], [
        "is not a training checkpoint of mmengine's runner (its meta has no "
        "'epoch'/'iter')", 'use --cfg-options load_from='
    ]),
    'amp-float16-on-cpu': (['--amp', 'optim_wrapper.dtype=float16'], [
        "dtype must be 'bfloat16' (the only dtype of CPU autocast), but got "
        "'float16'"
    ]),
    # Checked from the config, before the runner is built.
    'data-not-there': (['<missing_root>'], [
        'train_dataloader.dataset.data_root: ', '/nowhere does not exist',
        'Prepare the dataset (docs/get_started.md, section "Data")',
        '--cfg-options train_dataloader.dataset.data_root=PATH'
    ]),
    # The folder is there, the files are not: mmpretrain's FashionMNIST
    # raises RuntimeError while the dataloader is built.
    'data-files-not-there': (['<empty_root>'], [
        "train_dataloader.dataset (FashionMNIST, data_root '",
        'could not be read: Cannot find FashionMNIST dataset in ',
        'Prepare the dataset (docs/get_started.md, section "Data")'
    ]),
    # Would be "IndexError: Target 7 is out of bounds" in the first step.
    'labels-beyond-num_classes': (['model.head.num_classes=3'], [
        'train_dataloader.dataset has labels up to 9',
        'but model.head.num_classes is 3',
        'The dataset has 10 classes: set model.head.num_classes=10'
    ]),
}


def assert_one_error_line(result, fragments) -> None:
    """Exit status 2, no traceback, one ``error:`` line holding every
    fragment."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    errors = [
        line for line in result.stderr.splitlines()
        if line.startswith('error: ')
    ]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0]


def dataset_config(tmp_path, kind: str) -> str:
    """A BAKE config whose training set is multi-label or unlabelled.

    Labels are read without loading images, so the annotation files name
    images that need not exist.
    """
    if kind == 'multi_label':
        dataset_type, labels = 'MultiLabelDataset', [[0, 1], [2], [1], [0]]
    else:
        dataset_type, labels = 'BaseDataset', [None] * 4
    data_list = [
        dict(
            img_path=f'img{i}.png',
            **({} if label is None else dict(gt_label=label)))
        for i, label in enumerate(labels)
    ]
    ann_file = tmp_path / f'{kind}.json'
    ann_file.write_text(
        json.dumps(
            dict(metainfo=dict(classes=['a', 'b', 'c']), data_list=data_list)))
    config = tmp_path / f'bake_{kind}.py'
    config.write_text(f'_base_ = [{BAKE_CONFIG!r}]\n'
                      'train_dataloader = dict(dataset=dict(_delete_=True, '
                      f'type={dataset_type!r}, ann_file={str(ann_file)!r}, '
                      f'data_root={str(tmp_path)!r}))\n')
    return str(config)


def snapshot(folder: str) -> Dict[str, Tuple[str, int]]:
    """``{relative path: (sha256, mtime_ns)}`` of every file in a folder."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = osp.join(root, name)
            with open(path, 'rb') as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            files[osp.relpath(path,
                              folder)] = (digest, os.stat(path).st_mtime_ns)
    return files


def existing_work_dir(path: str) -> str:
    """A work dir of an earlier run: a checkpoint, its pointer, a log."""
    os.makedirs(osp.join(path, '20260101_000000'))
    checkpoint = osp.join(path, 'epoch_1.pth')
    torch.save({'meta': dict(epoch=1, iter=20), 'state_dict': {}}, checkpoint)
    with open(osp.join(path, 'last_checkpoint'), 'w') as f:
        f.write(checkpoint)
    with open(osp.join(path, '20260101_000000', '20260101_000000.log'),
              'w') as f:
        f.write('an earlier run\n')
    return path


CASE_PARAMS = list(ERROR_CASES)


@pytest.mark.parametrize('case_id', CASE_PARAMS)
def test_bad_input_is_a_clear_error(case_id, tmp_path, call_tool,
                                    tiny_cfg_options):
    additions, fragments = ERROR_CASES[case_id]
    config, args, options = BAKE_CONFIG, [], []
    for item in additions:
        if item == '<published>':
            # Weights and plain meta only, as publish_model.py writes.
            published = str(tmp_path / 'released.pth')
            torch.save({'state_dict': {}, 'meta': {'seed': 0}}, published)
            args += ['--resume', published]
        elif item == '<missing_root>':
            options.append('train_dataloader.dataset.data_root='
                           f'{tmp_path / "nowhere"}')
        elif item == '<empty_root>':
            (tmp_path / 'empty').mkdir()
            options.append('train_dataloader.dataset.data_root='
                           f'{tmp_path / "empty"}')
        elif item.startswith('<'):
            config = dataset_config(tmp_path, item.strip('<>'))
        elif item.startswith('--'):
            args.append(item)
        else:
            options.append(item)
    work_dir = existing_work_dir(str(tmp_path / 'work'))
    before = snapshot(work_dir)

    # No GPU is visible (conftest.py), so --amp means bfloat16 everywhere.
    result = call_tool([
        sys.executable, TRAIN, config, '--work-dir', work_dir, *args,
        '--cfg-options', *tiny_cfg_options, *options
    ],
                       timeout=120)

    assert_one_error_line(result, fragments)
    after = snapshot(work_dir)
    assert {k: after.get(k) for k in before} == before
    assert not [k for k in after if k.endswith('.pth') and k not in before]


# The other tools that read a dataset: the dataloader each one builds.
TOOL_LOADERS = {
    'test': (TEST, 'test_dataloader'),
    'visualize': (VISUALIZE, 'train_dataloader')
}


@pytest.mark.parametrize('tool', list(TOOL_LOADERS))
@pytest.mark.parametrize('case', ['data-not-there', 'labels'])
def test_data_errors_are_clear_in_every_tool(tool, case, tmp_path, call_tool,
                                             tiny_cfg_options):
    script, loader = TOOL_LOADERS[tool]
    checkpoint = str(tmp_path / 'weights.pth')
    torch.save({'state_dict': {}, 'meta': {}}, checkpoint)
    if case == 'data-not-there':
        option = f'{loader}.dataset.data_root={tmp_path / "nowhere"}'
        fragments = [
            f'{loader}.dataset.data_root: {tmp_path / "nowhere"} does not '
            'exist', 'docs/get_started.md, section "Data"'
        ]
    else:
        option = 'model.head.num_classes=3'
        fragments = [
            f'{loader}.dataset has labels up to ',
            'but model.head.num_classes is 3', 'The dataset has 10 classes'
        ]
    args = ['--out-dir', str(tmp_path / 'out')] if tool == 'visualize' \
        else ['--work-dir', str(tmp_path / 'work')]

    result = call_tool([
        sys.executable, script, BAKE_CONFIG, checkpoint, *args,
        '--cfg-options', *tiny_cfg_options, option
    ],
                       timeout=120)

    assert_one_error_line(result, fragments)


def labels_of_small_root(data_root: str) -> np.ndarray:
    """The training labels of the data root (IDX file, 8-byte header)."""
    with open(osp.join(data_root, 'train-labels-idx1-ubyte'), 'rb') as f:
        return np.frombuffer(f.read()[8:], dtype=np.uint8)


def test_class_with_a_single_image_trains_with_a_warning(
        tmp_path, call_tool, tiny_cfg_options, fashion_mnist_small_root):
    labels = labels_of_small_root(fashion_mnist_small_root)
    # One image of the first image's class, three of every other class.
    single = int(labels[0])
    indices = [0] + [
        int(i) for c in range(10) if c != single
        for i in np.flatnonzero(labels == c)[:3]
    ]
    result = call_tool([
        sys.executable, TRAIN, BAKE_CONFIG, '--work-dir',
        str(tmp_path / 'work'), '--no-validate', '--cfg-options',
        *tiny_cfg_options, 'train_dataloader.dataset.indices=[' +
        ','.join(map(str, indices)) + ']'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    # Documented handling: the anchor is repeated as its own mate.
    assert ('ClassAwareBatchSampler: 1 class(es) have a single image, whose '
            f'anchor is repeated as its own mate: [{single}]') in \
        result.stderr
    assert 'Epoch(train) [1][2/2]' in result.stdout + result.stderr


def test_bake_without_class_aware_batches_warns(tmp_path, call_tool,
                                                tiny_cfg_options):
    result = call_tool([
        sys.executable, TRAIN, BAKE_CONFIG, '--work-dir',
        str(tmp_path / 'work'), '--no-validate', '--cfg-options',
        *tiny_cfg_options, 'train_dataloader.batch_sampler=None'
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert ('BAKE: the first training batch does not look class-aware'
            in result.stderr)
    assert ("batch_sampler=dict(type='ClassAwareBatchSampler', "
            'num_instances=2)') in result.stderr


def test_debug_env_shows_the_traceback(tmp_path, run_tool, tool_env,
                                       tiny_cfg_options):
    result = run_tool([
        sys.executable, TRAIN, BAKE_CONFIG, '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *tiny_cfg_options,
        'model.head.omega=1.0'
    ],
                      timeout=120,
                      env=dict(tool_env, MMBAKE_DEBUG='1'))
    assert result.returncode == 1
    assert 'Traceback (most recent call last)' in result.stderr
    assert 'ValueError: omega must be a float in [0, 1)' in result.stderr
