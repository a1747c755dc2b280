"""The Fashion-MNIST configs: mmpretrain:: inheritance, data, BAKE twin."""
import os.path as osp

import pytest
from mmengine.config import Config

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PLAIN_CONFIG = osp.join(REPO_ROOT, 'configs', 'fashion_mnist',
                        'resnet18_1xb64-vanilla_fashion-mnist.py')
BAKE_CONFIG = osp.join(REPO_ROOT, 'configs', 'bake',
                       'resnet18_1xb64_fashion-mnist.py')


def test_mmpretrain_base_is_inherited():
    cfg = Config.fromfile(PLAIN_CONFIG)
    # From mmpretrain::_base_/default_runtime.py, through our runtime.
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.default_hooks.visualization.type == 'VisualizationHook'
    assert cfg.visualizer.type == 'UniversalVisualizer'
    # Our runtime's overrides on top of it.
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 1
    assert cfg.custom_imports == dict(
        imports=['mmbake'], allow_failed_imports=False)


def test_evaluation_uses_the_test_files():
    cfg = Config.fromfile(PLAIN_CONFIG)
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        # mmpretrain 1.2.0's FashionMNIST chooses files by test_mode only.
        assert loader.dataset.split == 'test'
        assert loader.dataset.test_mode is True
    assert cfg.train_dataloader.dataset.split == 'train'
    assert cfg.train_dataloader.dataset.get('test_mode', False) is False
    assert cfg.train_cfg.val_interval == cfg.train_cfg.max_epochs


def test_bake_twin_differs_only_in_head_sampler_and_file_input():
    plain = Config.fromfile(PLAIN_CONFIG).to_dict()
    bake = Config.fromfile(BAKE_CONFIG).to_dict()
    bake_head = bake['model'].pop('head')
    plain_head = plain['model'].pop('head')
    assert bake_head.pop('type') == 'BAKEHead'
    assert plain_head.pop('type') == 'LinearClsHead'
    assert {
        k: bake_head.pop(k)
        for k in ('omega', 'temperature', 'bake_weight')
    } == dict(
        omega=0.5, temperature=4.0, bake_weight=1.0)
    assert bake_head == plain_head
    assert bake['train_dataloader'].pop('batch_sampler') == dict(
        type='ClassAwareBatchSampler', num_instances=2)
    assert 'batch_sampler' not in plain['train_dataloader']
    # The zoo entry's evaluation also takes image files (ToGrayscale is an
    # identity on the dataset's arrays); the plain twin needs no mmbake.
    for cfg, first in ((bake, ['ToGrayscale']), (plain, [])):
        pipelines = [cfg.pop('test_pipeline')] + [
            cfg[loader]['dataset'].pop('pipeline')
            for loader in ('val_dataloader', 'test_dataloader')
        ]
        for pipeline in pipelines:
            assert [t['type'] for t in pipeline] == first + ['PackInputs']
    # Separate work dirs keep the twins' checkpoints (and --resume) apart.
    assert plain.pop('work_dir') == (
        './work_dirs/fashion_mnist/resnet18_1xb64-vanilla_fashion-mnist')
    assert bake.pop('work_dir') == (
        './work_dirs/bake/resnet18_1xb64_fashion-mnist')
    for cfg in (plain, bake):
        cfg.pop('filename', None)
    assert bake == plain


def test_datasets_build_from_the_config(fashion_mnist_root):
    from mmpretrain.registry import DATASETS
    cfg = Config.fromfile(PLAIN_CONFIG)
    val_cfg = dict(cfg.val_dataloader.dataset, data_root=fashion_mnist_root)
    val_set = DATASETS.build(val_cfg)
    assert len(val_set) == 10000
    labels = [int(val_set.get_data_info(i)['gt_label']) for i in range(5)]
    assert labels == [9, 2, 1, 1, 6]  # the official test set's first labels

    train_cfg = dict(
        cfg.train_dataloader.dataset, data_root=fashion_mnist_root)
    train_set = DATASETS.build(train_cfg)
    assert len(train_set) == 10000  # the first 10,000 training images
    sample = train_set[0]
    # 28x28 grayscale after RandomCrop(28, padding=2): one channel.
    assert tuple(sample['inputs'].shape) == (1, 28, 28)


@pytest.mark.parametrize('config', [PLAIN_CONFIG, BAKE_CONFIG])
def test_model_builds_for_one_channel_input(config):
    import torch
    from mmpretrain.registry import MODELS

    import mmbake  # noqa: F401  (BAKEHead)
    cfg = Config.fromfile(config)
    model = MODELS.build(
        dict(cfg.model, data_preprocessor=cfg.data_preprocessor))
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 28, 28), mode='tensor')
    assert tuple(logits.shape) == (2, 10)
