"""One short real BAKE training, shared by the checkpoint tests.

Two epochs of ``configs/bake/resnet18_1xb64_fashion-mnist.py`` on the small
Fashion-MNIST root (320 training images, batch 32) through mmengine's
``Runner``, its ``SafeCheckpointHook`` keeping both checkpoints:
``epoch_1.pth`` is what a user has right after training, and a resume from
it must end with the weights of ``epoch_2.pth``. Trained once per test run,
also across pytest-xdist workers; tests never write into its folder.
"""
import os.path as osp
import uuid

import numpy as np
import torch

from tests.conftest import shared_by_workers
from tests.script_utils import REPO_ROOT

BAKE_CONFIG = osp.join(REPO_ROOT, 'configs', 'bake',
                       'resnet18_1xb64_fashion-mnist.py')
PLAIN_CONFIG = osp.join(REPO_ROOT, 'configs', 'fashion_mnist',
                        'resnet18_1xb64-vanilla_fashion-mnist.py')
# The same weights after a resume (tests/test_reliability/test_kill_resume.py
# explains): a fixed seed; one train worker, started anew each epoch and
# seeded by mmengine from (seed, rank, worker id), so that epoch 2's random
# transforms draw alike after a resume; validation after the last save only.
RUN_CONFIG = """_base_ = [{base!r}]
loader = dict(num_workers=0, persistent_workers=False,
              dataset=dict(data_root={root!r}))
train_dataloader = dict(loader, batch_size=32, num_workers=1)
val_dataloader = dict(loader, batch_size=100)
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_interval=2)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=2))
randomness = dict(seed=0)
log_level = 'WARNING'
"""


def bake_run(tmp_path_factory, data_root: str) -> dict:
    """The run's ``config`` file, ``work_dir``, ``epoch_1`` and ``epoch_2``
    checkpoints, and ``data_root`` (this worker's copy of the data)."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    with shared_by_workers(tmp_path_factory, 'bake_run') as folder:
        config, work_dir = folder / 'bake_run.py', folder / 'work'
        if not (work_dir / 'epoch_2.pth').exists():
            folder.mkdir(exist_ok=True)
            config.write_text(
                RUN_CONFIG.format(base=BAKE_CONFIG, root=data_root))
            cfg = Config.fromfile(str(config))
            cfg.work_dir = str(work_dir)
            cfg.experiment_name = f'bake_run_{uuid.uuid4().hex}'
            Runner.from_cfg(cfg).train()
    return dict(
        config=str(config),
        work_dir=str(work_dir),
        epoch_1=str(work_dir / 'epoch_1.pth'),
        epoch_2=str(work_dir / 'epoch_2.pth'),
        data_root=data_root)


def first_test_images(data_root: str, num: int) -> torch.Tensor:
    """The first ``num`` test images, ``num x 1 x 28 x 28`` uint8, as the
    test dataloader gives them to the model's data preprocessor."""
    with open(osp.join(data_root, 't10k-images-idx3-ubyte'), 'rb') as f:
        data = f.read()[16:16 + num * 28 * 28]
    return torch.from_numpy(np.frombuffer(data, np.uint8).copy()).view(
        num, 1, 28, 28)
