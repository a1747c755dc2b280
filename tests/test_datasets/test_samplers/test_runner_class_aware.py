"""ClassAwareBatchSampler inside mmengine's Runner on real Fashion-MNIST.

The BAKE Fashion-MNIST config on 96 real 28x28 images, batch 16 (8 anchors
+ 8 mates): training works, every batch is class-aware, and a resumed run
yields exactly the batches of the uninterrupted run (epoch- and
iteration-based).
"""
import os.path as osp
import uuid
from collections import defaultdict

import numpy as np
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

CONFIG = osp.join(
    osp.dirname(__file__), *[osp.pardir] * 3, 'configs', 'bake',
    'resnet18_1xb64_fashion-mnist.py')
NUM_IMAGES, BATCH_SIZE = 96, 16


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


def train(data_root: str, work_dir: str, by_epoch: bool, **kwargs):
    """Train the shrunk config; return its batches and losses.

    The seed stays fixed (the config's): mmengine 0.10.7 builds the train
    dataloader (and its DefaultSampler, with the run's seed) before it
    restores the seed of a resumed checkpoint, so without a fixed seed even
    the plain shuffle of a resumed run differs from the uninterrupted one.
    """
    if by_epoch:
        loop, checkpoint = dict(max_epochs=3), dict(interval=1)
        sampler = dict(type='DefaultSampler', shuffle=True)
    else:
        loop = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=6)
        checkpoint = dict(by_epoch=False, interval=3)
        sampler = dict(type='InfiniteSampler', shuffle=True)
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(
        dict(
            work_dir=work_dir,
            experiment_name=uuid.uuid4().hex,  # one per runner and process
            train_cfg=loop,
            param_scheduler=[dict(type='ConstantLR', factor=1.0)],
            # No random transform: with num_workers=0 they draw from
            # numpy's global RNG in this process, whose state after a
            # resume differs from the uninterrupted run's.
            train_dataloader=dict(
                batch_size=BATCH_SIZE,
                num_workers=0,
                persistent_workers=False,
                sampler=sampler,
                dataset=dict(
                    data_root=data_root,
                    indices=NUM_IMAGES,
                    pipeline=[dict(type='PackInputs')])),
            val_dataloader=None,
            val_cfg=None,
            val_evaluator=None,
            default_hooks=dict(checkpoint=dict(checkpoint, max_keep_ckpts=-1)),
            log_level='WARNING',
            **kwargs))
    runner, hook = Runner.from_cfg(cfg), RecordBatches()
    runner.register_hook(hook)
    runner.train()
    for epoch_labels in hook.labels.values():
        for labels in epoch_labels:
            assert len(labels) == BATCH_SIZE
            # Anchor, mate, anchor, mate, ...: each pair shares a class.
            assert labels[0::2] == labels[1::2]
    assert np.isfinite(hook.losses).all()
    return hook


def test_epoch_based_training_and_resume(fashion_mnist_small_root, tmp_path):
    full = train(fashion_mnist_small_root, str(tmp_path / 'full'), True)
    # 'images' epochs: as many images per epoch as a plain sampler.
    assert sorted(full.indices) == [0, 1, 2]
    assert all(
        len(batches) == NUM_IMAGES // BATCH_SIZE
        for batches in full.indices.values())
    assert full.indices[0] != full.indices[1] != full.indices[2]

    resumed = train(
        fashion_mnist_small_root,
        str(tmp_path / 'resumed'),
        True,
        resume=True,
        load_from=str(tmp_path / 'full' / 'epoch_1.pth'))
    assert sorted(resumed.indices) == [1, 2]
    assert resumed.indices[1] == full.indices[1]
    assert resumed.indices[2] == full.indices[2]


def test_iteration_based_training_and_resume(fashion_mnist_small_root,
                                             tmp_path):
    full = train(fashion_mnist_small_root, str(tmp_path / 'full'), False)
    batches = full.indices[0]
    assert len(batches) == 6
    resumed = train(
        fashion_mnist_small_root,
        str(tmp_path / 'resumed'),
        False,
        resume=True,
        load_from=str(tmp_path / 'full' / 'iter_3.pth'))
    assert resumed.indices[0] == batches[3:]
