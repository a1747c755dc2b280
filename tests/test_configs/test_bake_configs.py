"""Every config in configs/bake/ (and the Fashion-MNIST twin): loads,
builds, changes only BAKE's part, says that mmbake's hooks run."""
import copy
import glob
import json
import math
import os.path as osp
from collections import Counter

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BAKE_DIR = osp.join(REPO, 'configs', 'bake')

BAKE_ARGS = ('omega', 'temperature', 'bake_weight', 'global_ensemble',
             'ensemble_group_size')

# "On the stock recipe" config -> the stock config it equals but for what
# its opening comment names: the head, the batch sampler and mmbake's hooks
# (with the plugin import and the shared pieces of configs/_base_/bake.py).
# yapf: disable
STOCK_RECIPES = {
    f'{name}_imagenet.py': f'mmpretrain::{folder}/{name}_in1k.py'
    for folder, name in [
        ('resnet', 'resnet50_8xb32'), ('resnet', 'resnet101_8xb32'),
        ('resnet', 'resnet152_8xb32'), ('resnext', 'resnext101-32x4d_8xb32'),
        ('resnext', 'resnext152-32x4d_8xb32'), ('resnest', 'resnest50_32xb64'),
        ('resnest', 'resnest101_32xb64'),
        ('mobilenet_v2', 'mobilenet-v2_8xb32'),
        ('efficientnet', 'efficientnet-b0_8xb32'),
        ('swin_transformer', 'swin-tiny_16xb64')]}
# yapf: enable
STOCK_RECIPE_CHANGES = {
    'model.head.type', 'model.head.omega', 'model.head.temperature',
    'model.head.bake_weight', 'model.head.global_ensemble',
    'train_dataloader.batch_sampler', 'custom_imports', 'bake_head',
    'bake_batch_sampler', 'default_hooks.checkpoint.type', 'custom_hooks'
}

# Config -> (plain config whose head it extends, num_instances, epoch_mode,
# global_ensemble); the pycls configs are the authors' recipe with another
# backbone (test_authors_pycls_configs.py).
AUTHORS = ('mmpretrain::resnet/resnet50_8xb32_in1k.py', 2, 'anchors', True)
# yapf: disable
EXPECTED = {
    'resnet50_8xb64-authors_imagenet.py': AUTHORS,
    'resnet18_1xb128_cifar100.py': (
        'mmpretrain::_base_/models/resnet18_cifar.py', 4, 'anchors', False),
    'resnet18_1xb64_fashion-mnist.py': (osp.join(
        REPO, 'configs', 'fashion_mnist',
        'resnet18_1xb64-vanilla_fashion-mnist.py'), 2, 'images', True),
    **{f'{stem}_authors-pycls_in1k.py': AUTHORS for stem in (
        'resnet50', 'resnet101', 'resnet152', 'resnext101-32x4d',
        'resnext152-32x4d')},
    **{name: (stock, 2, 'images', True)
       for name, stock in STOCK_RECIPES.items()}}
# yapf: enable
# Heads whose plain config has another num_classes than the model base.
NUM_CLASSES = {'resnet18_1xb128_cifar100.py': 100}

CONFIG_NAMES = sorted(
    osp.basename(p) for p in glob.glob(osp.join(BAKE_DIR, '*.py')))
_loaded = {}


def load(path: str) -> Config:
    """Load a config (``mmpretrain::`` paths too) once per test session."""
    if path not in _loaded:
        import mmpretrain
        _loaded[path] = Config.fromfile(
            path.replace(
                'mmpretrain::',
                osp.join(osp.dirname(mmpretrain.__file__), '.mim/configs/')))
    return copy.deepcopy(_loaded[path])


def bake_config(name: str) -> Config:
    return load(osp.join(BAKE_DIR, name))


def plain(value):
    """``value`` as plain dicts and lists, without the ``_scope_`` keys that
    mmengine adds to everything inherited through ``mmpretrain::``."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def changed_keys(cfg: dict, base: dict, prefix: str = '') -> set:
    """Dotted keys whose values differ (dicts compared key by key)."""
    keys = set()
    for key in set(cfg) | set(base):
        mine, theirs = cfg.get(key, KeyError), base.get(key, KeyError)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            keys |= changed_keys(mine, theirs, f'{prefix}{key}.')
        elif mine != theirs:
            keys.add(prefix + key)
    return keys


@pytest.fixture(scope='module')
def labels_only_dataset(tmp_path_factory) -> dict:
    """2 samples for each of 1,000 classes: the batch sampler reads labels
    only, so an annotation file is a real dataset for it."""
    ann = tmp_path_factory.mktemp('ann') / 'ann.json'
    labels = [dict(img_path='x', gt_label=i % 1000) for i in range(2000)]
    classes = dict(classes=list(map(str, range(1000))))
    ann.write_text(json.dumps(dict(metainfo=classes, data_list=labels)))
    return dict(type='BaseDataset', ann_file=str(ann), lazy_init=True)


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_config_sets_bake_and_builds(name, labels_only_dataset):
    """Loads (importing mmbake), sets BAKE and mmbake's hooks, and builds
    its model (no forward pass: ResNeXt-152 builds in under a second) and
    its batch sampler over a labels-only dataset, as mmengine's runner
    builds them (runner.py, build_dataloader)."""
    import torch.nn as nn
    from mmpretrain.registry import DATA_SAMPLERS, DATASETS, MODELS

    from mmbake.datasets import ClassAwareBatchSampler
    from mmbake.models import BAKEHead

    assert sorted(EXPECTED) == CONFIG_NAMES  # every config is covered
    cfg = bake_config(name)
    assert cfg.custom_imports == dict(
        imports=['mmbake'], allow_failed_imports=False)
    assert cfg.default_scope == 'mmpretrain'
    # mmbake's hooks, said by the config (the tools change none).
    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook'
    assert cfg.default_hooks.checkpoint.interval == 1
    assert dict(type='CheckLabelsHook') in plain(cfg.custom_hooks)

    plain_path, num_instances, epoch_mode, global_ensemble = EXPECTED[name]
    plain_head = plain(load(plain_path).model.head)
    head = plain(cfg.model.head)
    # The BAKE variant of the head family.
    family = plain_head['type']
    assert head['type'] == ('BAKEHead'
                            if family == 'LinearClsHead' else 'BAKE' + family)
    # The paper's defaults (omega 0.5, T 4, lambda 1) everywhere.
    assert (head.get('omega', 0.5), head.get('temperature', 4.0),
            head.get('bake_weight', 1.0)) == (0.5, 4.0, 1.0)
    assert head.get('global_ensemble', True) == global_ensemble
    # Every key of the plain head (loss, topk, cal_acc, init_cfg, ...) is
    # kept, with its value.
    expected_head = dict(
        plain_head,
        type=head['type'],
        num_classes=NUM_CLASSES.get(name, plain_head['num_classes']))
    assert {k: head[k] for k in head if k not in BAKE_ARGS} == expected_head

    loader = plain(cfg.train_dataloader)
    assert loader['sampler'] == dict(type='DefaultSampler', shuffle=True)
    assert dict(dict(epoch_mode='images'), **loader['batch_sampler']) == dict(
        type='ClassAwareBatchSampler',
        num_instances=num_instances,
        epoch_mode=epoch_mode)

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
        dataset = DATASETS.build(labels_only_dataset)
        loader = cfg.train_dataloader
        sampler = DATA_SAMPLERS.build(
            loader.sampler, default_args=dict(dataset=dataset, seed=0))
        batch_sampler = DATA_SAMPLERS.build(
            loader.batch_sampler,
            default_args=dict(sampler=sampler, batch_size=loader.batch_size))
    assert isinstance(model.head, BAKEHead)
    assert isinstance(model.head.fc, nn.Linear)
    assert (model.head.fc.in_features,
            model.head.fc.out_features) == (plain_head['in_channels'],
                                            expected_head['num_classes'])
    assert (model.head.omega, model.head.temperature,
            model.head.bake_weight) == (0.5, 4.0, 1.0)
    assert isinstance(batch_sampler, ClassAwareBatchSampler)
    assert batch_sampler.sampler is sampler
    per_batch = loader.batch_size // (
        num_instances if epoch_mode == 'anchors' else 1)
    assert len(batch_sampler) == math.ceil(len(dataset) / per_batch)
    batch = next(iter(batch_sampler))
    assert len(batch) == loader.batch_size
    # Every class in the batch arrives with at least num_instances images.
    labels = dataset.get_gt_labels()
    assert min(Counter(int(labels[i])
                       for i in batch).values()) >= num_instances


@pytest.mark.parametrize('name', sorted(STOCK_RECIPES))
def test_stock_recipe_config_changes_only_head_and_sampler(name):
    cfg = bake_config(name)
    # What the opening comment says, and nothing else (no SyncBN either).
    assert ('Only the head (LinearClsHead -> BAKEHead) and the batch sampler '
            "change;\n# mmbake's hooks check labels and save checkpoints that "
            'survive a kill.') in open(cfg.filename).read().split('_base_')[0]
    changed = changed_keys(
        plain(cfg.to_dict()), plain(load(STOCK_RECIPES[name]).to_dict()))
    assert changed == STOCK_RECIPE_CHANGES


# yapf: disable
@pytest.mark.parametrize('name,expected', [
    # The authors' ImageNet recipe (bake.md), where 8xb32 cannot follow.
    ('resnet50_8xb64-authors_imagenet.py', {
        'train_dataloader.batch_size': 64, 'train_cfg.max_epochs': 100,
        'optim_wrapper.optimizer': dict(type='SGD', lr=0.4, momentum=0.9,
                                        weight_decay=5e-5, nesterov=True),
        'param_scheduler.0.type': 'LinearLR',
        'param_scheduler.1.type': 'CosineAnnealingLR',
        'param_scheduler.1.T_max': 100, 'auto_scale_lr.base_batch_size': 512,
        'sync_bn': 'torch', 'model.backbone.zero_init_residual': False,
        'custom_hooks': [dict(type='CheckLabelsHook'),
                         dict(type='BatchSamplerPreciseBNHook',
                              num_samples=8192, interval=1)]}),
    # CIFAR-100 ResNet-18: the authors' small-scale recipe (bake.md).
    ('resnet18_1xb128_cifar100.py', {
        'train_dataloader.batch_size': 128, 'train_cfg.max_epochs': 200,
        'optim_wrapper.optimizer': dict(type='SGD', lr=0.1, momentum=0.9,
                                        weight_decay=1e-4),
        'param_scheduler': dict(type='MultiStepLR', by_epoch=True,
                                milestones=[100, 150], gamma=0.1),
        'train_dataloader.dataset.type': 'CIFAR100',
        'test_dataloader.dataset.split': 'test'})])
# yapf: enable
def test_authors_recipes(name, expected):
    cfg = plain(bake_config(name).to_dict())
    for key, value in expected.items():
        found = cfg
        for part in key.split('.'):
            found = found[int(part) if part.isdigit() else part]
        assert found == value, key


def test_authors_pipeline_lighting_does_not_wrap(tmp_path):
    """The authors' PCA lighting on a saturated image stays near 255:
    mmpretrain's ``Lighting`` casts back to the input dtype without
    clipping, so the config loads float32 (on uint8 a white pixel pushed
    above 255 would wrap around to a dark one)."""
    import cv2
    import numpy as np
    from mmcv.transforms import Compose
    from mmpretrain.registry import TRANSFORMS

    image = tmp_path / 'white.png'
    cv2.imwrite(str(image), np.full((64, 80, 3), 255, np.uint8))
    pipeline = bake_config(
        'resnet50_8xb64-authors_imagenet.py').train_dataloader.dataset.pipeline
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        transforms = Compose([TRANSFORMS.build(t) for t in pipeline])
    np.random.seed(0)
    for _ in range(10):
        inputs = transforms(dict(img_path=str(image)))['inputs']
        assert tuple(inputs.shape) == (3, 224, 224)
        assert inputs.is_floating_point()
        # alphastd 0.1 on eigenvalues up to 55: shifts of a few levels.
        assert inputs.min() > 200 and inputs.max() < 310


VANILLA = EXPECTED['resnet18_1xb64_fashion-mnist.py'][0]


def test_fashion_mnist_runtime_and_evaluation_data():
    cfg = load(VANILLA)
    # From mmpretrain::_base_/default_runtime.py, through our runtime, with
    # its overrides (mmbake's hooks, one checkpoint kept).
    assert cfg.default_hooks.visualization.type == 'VisualizationHook'
    assert cfg.visualizer.type == 'UniversalVisualizer'
    assert plain(cfg.default_hooks.checkpoint) == dict(
        type='SafeCheckpointHook', interval=1, max_keep_ckpts=1)
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        # mmpretrain 1.2.0's FashionMNIST chooses files by test_mode only.
        assert (loader.dataset.split, loader.dataset.test_mode) == ('test',
                                                                    True)
    assert cfg.train_dataloader.dataset.split == 'train'
    assert not cfg.train_dataloader.dataset.get('test_mode', False)
    assert cfg.train_cfg.val_interval == cfg.train_cfg.max_epochs


def test_fashion_mnist_twin_differs_only_in_bake_and_file_input():
    bake = plain(bake_config('resnet18_1xb64_fashion-mnist.py').to_dict())
    vanilla = plain(load(VANILLA).to_dict())
    assert changed_keys(bake, vanilla) == {
        'model.head.type', 'model.head.omega', 'model.head.temperature',
        'model.head.bake_weight', 'train_dataloader.batch_sampler',
        'custom_hooks', 'test_pipeline', 'val_dataloader.dataset.pipeline',
        'test_dataloader.dataset.pipeline', 'work_dir'
    }
    # The zoo entry's evaluation also takes image files (ToGrayscale is an
    # identity on the dataset's arrays); the plain twin needs no mmbake.
    assert [
        t['type'] for t in bake['test_pipeline']
    ] == ['ToGrayscale'] + [t['type'] for t in vanilla['test_pipeline']]
    # Separate work dirs keep the twins' checkpoints (and --resume) apart.
    assert (bake['work_dir'], vanilla['work_dir']) == (
        './work_dirs/bake/resnet18_1xb64_fashion-mnist',
        './work_dirs/fashion_mnist/resnet18_1xb64-vanilla_fashion-mnist')


def test_fashion_mnist_datasets_build_from_the_config(fashion_mnist_root):
    from mmpretrain.registry import DATASETS
    cfg = load(VANILLA)
    val_set = DATASETS.build(
        dict(cfg.val_dataloader.dataset, data_root=fashion_mnist_root))
    assert len(val_set) == 10000
    # The official test set's first labels.
    assert [int(val_set.get_data_info(i)['gt_label'])
            for i in range(5)] == [9, 2, 1, 1, 6]
    train_set = DATASETS.build(
        dict(cfg.train_dataloader.dataset, data_root=fashion_mnist_root))
    assert len(train_set) == 10000  # the first 10,000 training images
    # 28x28 grayscale after RandomCrop(28, padding=2): one channel.
    assert tuple(train_set[0]['inputs'].shape) == (1, 28, 28)


def test_config_names_are_unique_and_no_module_or_tool_name():
    """``mim train mmbake NAME.py`` (openmim 0.3.9) finds a config by its
    file name across the installed package (``mmbake/.mim`` holds configs/
    and tools/) and refuses a name found twice, as mmpretrain's names are
    unique too."""
    found = {}
    for folder in ('configs', 'mmbake', 'tools'):
        for path in glob.glob(
                osp.join(REPO, folder, '**', '*.py'), recursive=True):
            if '.mim' not in path:
                found.setdefault(osp.basename(path), []).append(path)
    configs = [
        n for n, paths in found.items() if any('/configs/' in p for p in paths)
    ]
    # The walk must see the tree, or the check proves nothing.
    assert 'resnet18_1xb64_fashion-mnist.py' in configs and 'train.py' in found
    assert {n: found[n] for n in configs if len(found[n]) > 1} == {}
