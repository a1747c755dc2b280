"""Every config in configs/bake/: loads, builds, changes only BAKE's part.

Each config is loaded with ``Config.fromfile`` (which imports mmbake through
its ``custom_imports``), its model is built through mmpretrain's registry
(no forward pass: building the largest, ResNeXt-152, takes under a second
on the CPU), and its batch sampler is built through the registry over a
labels-only dataset with the config's own batch size.
"""
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

# The BAKE variant of each mmpretrain head family.
BAKE_HEADS = {
    'LinearClsHead': 'BAKEHead',
    'VisionTransformerClsHead': 'BAKEVisionTransformerClsHead',
    'StackedLinearClsHead': 'BAKEStackedLinearClsHead',
}
BAKE_ARGS = ('omega', 'temperature', 'bake_weight', 'global_ensemble',
             'ensemble_group_size')

# "On the stock recipe" config -> the stock config it equals but for what
# its opening comment names: the head and the batch sampler (with the
# plugin import and the two shared pieces of configs/_base_/bake.py).
STOCK_RECIPES = {
    'resnet50_8xb32_imagenet.py':
    'mmpretrain::resnet/resnet50_8xb32_in1k.py',
    'resnet101_8xb32_imagenet.py':
    'mmpretrain::resnet/resnet101_8xb32_in1k.py',
    'resnet152_8xb32_imagenet.py':
    'mmpretrain::resnet/resnet152_8xb32_in1k.py',
    'resnext101-32x4d_8xb32_imagenet.py':
    'mmpretrain::resnext/resnext101-32x4d_8xb32_in1k.py',
    'resnext152-32x4d_8xb32_imagenet.py':
    'mmpretrain::resnext/resnext152-32x4d_8xb32_in1k.py',
    'resnest50_32xb64_imagenet.py':
    'mmpretrain::resnest/resnest50_32xb64_in1k.py',
    'resnest101_32xb64_imagenet.py':
    'mmpretrain::resnest/resnest101_32xb64_in1k.py',
    'mobilenet-v2_8xb32_imagenet.py':
    'mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py',
    'efficientnet-b0_8xb32_imagenet.py':
    'mmpretrain::efficientnet/efficientnet-b0_8xb32_in1k.py',
    'swin-tiny_16xb64_imagenet.py':
    'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
}
STOCK_RECIPE_CHANGES = {
    'model.head.type', 'model.head.omega', 'model.head.temperature',
    'model.head.bake_weight', 'model.head.global_ensemble',
    'train_dataloader.batch_sampler', 'custom_imports', 'bake_head',
    'bake_batch_sampler'
}

# Config -> (plain head it extends, expected batch sampler settings,
# expected BAKE arguments beyond the paper's omega 0.5 / T 4 / lambda 1).
EXPECTED = {
    'resnet50_8xb64-authors_imagenet.py':
    ('mmpretrain::resnet/resnet50_8xb32_in1k.py', (2, 'anchors'),
     dict(global_ensemble=True)),
    'resnet18_1xb128_cifar100.py':
    ('mmpretrain::_base_/models/resnet18_cifar.py', (4, 'anchors'),
     dict(global_ensemble=False)),
    'resnet18_1xb64_fashion-mnist.py':
    (osp.join(REPO, 'configs', 'fashion_mnist',
              'resnet18_1xb64-vanilla_fashion-mnist.py'), (2, 'images'),
     dict(global_ensemble=True)),
}
# Configs for the authors' converted pycls checkpoints: the authors' recipe
# with another backbone (tests/test_configs/test_authors_pycls_configs.py).
for _stem in ('resnet50', 'resnet101', 'resnet152', 'resnext101-32x4d',
              'resnext152-32x4d'):
    EXPECTED[f'{_stem}_authors-pycls_in1k.py'] = EXPECTED[
        'resnet50_8xb64-authors_imagenet.py']
for _name, _plain in STOCK_RECIPES.items():
    EXPECTED.setdefault(_name,
                        (_plain, (2, 'images'), dict(global_ensemble=True)))

# Heads whose plain config has another num_classes than the model base.
NUM_CLASSES = {'resnet18_1xb128_cifar100.py': 100}

CONFIG_NAMES = sorted(
    osp.basename(p) for p in glob.glob(osp.join(BAKE_DIR, '*.py')))
_loaded = {}


def load(path: str) -> Config:
    """Load a config (``mmpretrain::`` paths too) once per test session."""
    if path not in _loaded:
        if path.startswith('mmpretrain::'):
            import mmpretrain
            path_on_disk = osp.join(
                osp.dirname(mmpretrain.__file__), '.mim', 'configs',
                path[len('mmpretrain::'):])
        else:
            path_on_disk = path
        _loaded[path] = Config.fromfile(path_on_disk)
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
    """Dotted keys whose values differ between two configs (dicts are
    compared key by key, anything else as a whole)."""
    keys = set()
    for key in set(cfg) | set(base):
        mine, theirs = cfg.get(key, KeyError), base.get(key, KeyError)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            keys |= changed_keys(mine, theirs, f'{prefix}{key}.')
        elif mine != theirs:
            keys.add(prefix + key)
    return keys


def test_every_config_is_covered():
    assert sorted(EXPECTED) == CONFIG_NAMES


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_config_loads_mmbake_and_sets_bake(name):
    cfg = bake_config(name)
    assert cfg.custom_imports == dict(
        imports=['mmbake'], allow_failed_imports=False)
    assert cfg.default_scope == 'mmpretrain'

    plain_path, (num_instances, epoch_mode), bake_args = EXPECTED[name]
    plain_head = plain(load(plain_path).model.head)
    head = plain(cfg.model.head)
    assert head['type'] == BAKE_HEADS[plain_head['type']]
    # The paper's defaults (omega 0.5, T 4, lambda 1) everywhere.
    assert (head.get('omega', 0.5), head.get('temperature', 4.0),
            head.get('bake_weight', 1.0)) == (0.5, 4.0, 1.0)
    assert head.get('global_ensemble', True) == bake_args['global_ensemble']
    # Every key of the plain head (loss, topk, cal_acc, init_cfg, ...) is
    # kept, with its value.
    expected_head = dict(plain_head, type=head['type'])
    expected_head.update(
        num_classes=NUM_CLASSES.get(name, plain_head['num_classes']))
    assert {k: v for k, v in head.items() if k not in BAKE_ARGS} \
        == expected_head

    loader = plain(cfg.train_dataloader)
    assert loader['sampler'] == dict(type='DefaultSampler', shuffle=True)
    batch_sampler = loader['batch_sampler']
    assert batch_sampler['type'] == 'ClassAwareBatchSampler'
    assert batch_sampler['num_instances'] == num_instances
    assert batch_sampler.get('epoch_mode', 'images') == epoch_mode
    assert loader['batch_size'] % num_instances == 0


@pytest.mark.parametrize('name', sorted(STOCK_RECIPES))
def test_stock_recipe_config_changes_only_head_and_sampler(name):
    cfg = bake_config(name)
    # What the opening comment says, and nothing else (no SyncBN either).
    assert 'Only the head (LinearClsHead -> BAKEHead) and the batch sampler ' \
        'change.' in open(cfg.filename).read().split('_base_')[0]
    changed = changed_keys(
        plain(cfg.to_dict()), plain(load(STOCK_RECIPES[name]).to_dict()))
    assert changed == STOCK_RECIPE_CHANGES


def test_authors_recipe_config():
    """The authors' ImageNet recipe (bake.md), where 8xb32 cannot follow."""
    cfg = bake_config('resnet50_8xb64-authors_imagenet.py')
    assert cfg.train_dataloader.batch_size * 8 == 512
    assert plain(cfg.optim_wrapper.optimizer) == dict(
        type='SGD', lr=0.4, momentum=0.9, weight_decay=5e-5, nesterov=True)
    assert cfg.train_cfg.max_epochs == 100
    assert [s['type']
            for s in cfg.param_scheduler] == ['LinearLR', 'CosineAnnealingLR']
    assert cfg.param_scheduler[1]['T_max'] == 100
    assert cfg.auto_scale_lr.base_batch_size == 512
    assert cfg.sync_bn == 'torch'
    assert cfg.model.backbone.zero_init_residual is False
    assert cfg.custom_hooks == [
        dict(type='BatchSamplerPreciseBNHook', num_samples=8192, interval=1)
    ]


def test_small_scale_recipe_config():
    """CIFAR-100 ResNet-18: the authors' small-scale recipe (bake.md)."""
    cfg = bake_config('resnet18_1xb128_cifar100.py')
    assert cfg.train_dataloader.batch_size == 128
    assert plain(cfg.optim_wrapper.optimizer) == dict(
        type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert plain(cfg.param_scheduler) == dict(
        type='MultiStepLR', by_epoch=True, milestones=[100, 150], gamma=0.1)
    assert cfg.train_cfg.max_epochs == 200
    assert cfg.train_dataloader.dataset.type == 'CIFAR100'
    assert cfg.test_dataloader.dataset.split == 'test'


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_model_builds_with_bake_head(name):
    import torch.nn as nn
    from mmpretrain.registry import MODELS

    from mmbake.models import BAKEHead

    cfg = bake_config(name)
    plain_head = load(EXPECTED[name][0]).model.head
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    assert isinstance(model.head, BAKEHead)
    fc = model.head.fc
    assert isinstance(fc, nn.Linear)
    assert fc.in_features == plain_head.in_channels
    assert fc.out_features == NUM_CLASSES.get(name, plain_head.num_classes)
    assert (model.head.omega, model.head.temperature,
            model.head.bake_weight) == (0.5, 4.0, 1.0)


@pytest.fixture(scope='module')
def labels_only_dataset(tmp_path_factory):
    """A 2,000-sample annotation file, 2 samples per class of 1,000 classes.

    The batch sampler reads labels only, never images, so an annotation
    file in OpenMMLab's format is a real dataset for it.
    """
    ann = tmp_path_factory.mktemp('ann') / 'ann.json'
    ann.write_text(
        json.dumps(
            dict(
                metainfo=dict(classes=[str(c) for c in range(1000)]),
                data_list=[
                    dict(img_path=f'{i}.jpg', gt_label=i % 1000)
                    for i in range(2000)
                ])))
    return dict(type='BaseDataset', ann_file=str(ann), lazy_init=True)


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_batch_sampler_builds_from_config(name, labels_only_dataset):
    from mmpretrain.registry import DATA_SAMPLERS, DATASETS

    from mmbake.datasets import ClassAwareBatchSampler

    cfg = bake_config(name).train_dataloader
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = DATASETS.build(labels_only_dataset)
        sampler = DATA_SAMPLERS.build(
            cfg.sampler, default_args=dict(dataset=dataset, seed=0))
        # As mmengine's runner builds it (runner.py, build_dataloader).
        batch_sampler = DATA_SAMPLERS.build(
            cfg.batch_sampler,
            default_args=dict(sampler=sampler, batch_size=cfg.batch_size))
    assert isinstance(batch_sampler, ClassAwareBatchSampler)
    assert batch_sampler.sampler is sampler

    per_batch = (
        cfg.batch_size if batch_sampler.epoch_mode == 'images' else
        cfg.batch_size // batch_sampler.num_instances)
    assert len(batch_sampler) == math.ceil(len(dataset) / per_batch)
    labels = dataset.get_gt_labels()
    batch = next(iter(batch_sampler))
    assert len(batch) == cfg.batch_size
    # Every class in the batch arrives with at least num_instances images.
    counts = Counter(int(labels[i]) for i in batch)
    assert min(counts.values()) >= batch_sampler.num_instances


def test_authors_pipeline_lighting_does_not_wrap(tmp_path):
    """The authors' PCA lighting on a saturated image stays near 255.

    mmpretrain's ``Lighting`` casts back to the input dtype without
    clipping; the config loads images as float32 so that a white pixel
    pushed above 255 is not wrapped around to a dark one, as on uint8.
    """
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
