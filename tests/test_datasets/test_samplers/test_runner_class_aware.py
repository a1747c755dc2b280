"""ClassAwareBatchSampler inside mmengine's Runner on real Fashion-MNIST.

A tiny ResNet on 96 real 28x28 images, batch 16 (8 anchors + 8 mates):
training works, every batch is class-aware, and a resumed run yields
exactly the batches of the uninterrupted run (epoch- and iteration-based).
"""
import os.path as osp
from collections import defaultdict

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

import mmbake  # noqa: F401  (registers ClassAwareBatchSampler)

NUM_IMAGES = 96
# mmpretrain 1.2.0's MNIST reader on numpy 2 / torch 2.x: harmless noise,
# once per image.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword"
        ':DeprecationWarning'),
    pytest.mark.filterwarnings(
        'ignore:The given NumPy array is not writable:UserWarning'),
]
BATCH_SIZE = 16


@pytest.fixture(autouse=True)
def one_thread():
    """Train these tiny models on one thread, restored afterwards.

    On shared CI cores, torch's thread pool contending with other jobs made
    the steps many times slower (73 s instead of 4 s for the resume test).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RecordBatches(Hook):
    """Remember the dataset indices and labels of every training batch."""

    def __init__(self) -> None:
        self.indices = defaultdict(list)  # epoch (or 0) -> list of batches
        self.labels = defaultdict(list)
        self.losses = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        samples = data_batch['data_samples']
        self.indices[runner.epoch].append([s.sample_idx for s in samples])
        self.labels[runner.epoch].append(
            [int(s.gt_label.item()) for s in samples])

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None) -> None:
        self.losses.append(float(outputs['loss'].detach()))


def runner_cfg(data_root: str,
               work_dir: str,
               name: str,
               hook: Hook,
               by_epoch: bool = True,
               length: int = 3,
               **kwargs) -> dict:
    """An inline config: tiny ResNet_CIFAR, 1 channel, 10 classes.

    The seed is fixed: mmengine 0.10.7 builds the train dataloader (and its
    DefaultSampler, with the run's seed) before it restores the seed of a
    resumed checkpoint, so without a fixed seed even the plain shuffle of a
    resumed run differs from the uninterrupted one.
    """
    if by_epoch:
        train_cfg = dict(by_epoch=True, max_epochs=length)
        sampler = dict(type='DefaultSampler', shuffle=True)
        checkpoint = dict(type='SafeCheckpointHook', interval=1)
    else:
        train_cfg = dict(by_epoch=False, max_iters=length)
        sampler = dict(type='InfiniteSampler', shuffle=True)
        checkpoint = dict(
            type='SafeCheckpointHook', interval=3, by_epoch=False)
    return dict(
        model=dict(
            type='ImageClassifier',
            data_preprocessor=dict(
                num_classes=10, mean=[72.94], std=[90.02], to_rgb=False),
            backbone=dict(
                type='ResNet_CIFAR',
                depth=18,
                in_channels=1,
                stem_channels=16,
                base_channels=16,
                out_indices=(3, )),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=10,
                in_channels=128,
                loss=dict(type='CrossEntropyLoss'))),
        work_dir=work_dir,
        experiment_name=name,
        train_dataloader=dict(
            batch_size=BATCH_SIZE,
            num_workers=0,
            dataset=dict(
                type='FashionMNIST',
                data_root=data_root,
                split='train',
                download=False,
                indices=NUM_IMAGES,
                pipeline=[dict(type='PackInputs')]),
            sampler=sampler,
            batch_sampler=dict(type='ClassAwareBatchSampler',
                               num_instances=2)),
        train_cfg=train_cfg,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        default_hooks=dict(
            checkpoint=checkpoint,
            logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[hook],
        randomness=dict(seed=42),
        default_scope='mmpretrain',
        log_level='WARNING',
        **kwargs)


def train(data_root: str, work_dir: str, name: str, **kwargs) -> RecordBatches:
    """Train the inline config; return its batches and losses."""
    hook = RecordBatches()
    Runner(**runner_cfg(data_root, work_dir, name, hook, **kwargs)).train()
    return hook


def assert_class_aware(hook: RecordBatches) -> None:
    for epoch_labels in hook.labels.values():
        for labels in epoch_labels:
            assert len(labels) == BATCH_SIZE
            # Anchor, mate, anchor, mate, ...: each pair shares a class.
            assert labels[0::2] == labels[1::2]


def test_epoch_based_training_and_resume(fashion_mnist_small_root, tmp_path):
    data_root = fashion_mnist_small_root
    full = train(data_root, str(tmp_path / 'full'), 'cabs_full')

    # 'images' epochs: as many images per epoch as a plain sampler.
    assert sorted(full.indices) == [0, 1, 2]
    assert all(
        len(batches) == NUM_IMAGES // BATCH_SIZE
        for batches in full.indices.values())
    assert_class_aware(full)
    assert full.indices[0] != full.indices[1] != full.indices[2]
    assert np.isfinite(full.losses).all()

    checkpoint = osp.join(str(tmp_path / 'full'), 'epoch_1.pth')
    assert osp.isfile(checkpoint)
    resumed = train(
        data_root,
        str(tmp_path / 'resumed'),
        'cabs_resumed',
        resume=True,
        load_from=checkpoint)
    assert sorted(resumed.indices) == [1, 2]
    assert resumed.indices[1] == full.indices[1]
    assert resumed.indices[2] == full.indices[2]


def test_iteration_based_training_and_resume(fashion_mnist_small_root,
                                             tmp_path):
    data_root = fashion_mnist_small_root
    full = train(
        data_root,
        str(tmp_path / 'full'),
        'cabs_iter_full',
        by_epoch=False,
        length=6)
    batches = full.indices[0]
    assert len(batches) == 6
    assert_class_aware(full)

    checkpoint = osp.join(str(tmp_path / 'full'), 'iter_3.pth')
    resumed = train(
        data_root,
        str(tmp_path / 'resumed'),
        'cabs_iter_resumed',
        by_epoch=False,
        length=6,
        resume=True,
        load_from=checkpoint)
    assert resumed.indices[0] == batches[3:]
