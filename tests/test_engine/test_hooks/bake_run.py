"""One short real BAKE training, shared by the checkpoint and tool tests,
made once per test run (also across pytest-xdist workers): two epochs of
``configs/bake/resnet18_1xb64_fashion-mnist.py`` on the small root (320
images, batch 32) through mmengine's ``Runner``, both checkpoints kept, the
last published and calibrated on the 320 images. Never written to by tests.
"""
import glob
import os.path as osp
import uuid

import numpy as np
import torch

from tests.conftest import shared_by_workers
from tests.script_utils import REPO_ROOT, load_script

CONFIGS = osp.join(REPO_ROOT, 'configs')
PLAIN_CONFIG = osp.join(CONFIGS, 'fashion_mnist',
                        'resnet18_1xb64-vanilla_fashion-mnist.py')
HELDOUT_CONFIG = PLAIN_CONFIG.replace('-vanilla', '-heldout')
# A resume from epoch 1 ends with epoch 2's weights (test_kill_resume.py
# explains): a fixed seed, and one train worker started anew each epoch,
# seeded by mmengine from (seed, rank, worker id), so that epoch 2's random
# transforms draw alike after a resume; validation after the last save.
RUN_CONFIG = """_base_ = [{base!r}]
loader = dict(num_workers=0, persistent_workers=False,
              dataset=dict(data_root={root!r}))
train_dataloader = dict(loader, batch_size=32, num_workers=1)
val_dataloader = dict(loader, batch_size=100)
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_interval=2)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=2))
randomness = dict(seed=0)
"""


def heldout_options(data_root: str, num_splits: int = 1, fold: int = 0):
    """``HELDOUT_CONFIG``'s fold of the small root's 320 training images."""
    return [
        f'val_dataloader.dataset.dataset.data_root={data_root}',
        f'val_dataloader.dataset.num_splits={num_splits}',
        f'val_dataloader.dataset.fold={fold}'
    ]


def bake_run(tmp_path_factory, data_root: str) -> dict:
    """Paths of the run's ``config``, ``epoch_1``, ``epoch_2``, ``release``
    and ``calibrated``, and ``data_root`` (this worker's copy)."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    with shared_by_workers(tmp_path_factory, 'bake_run') as folder:
        run = {
            k: str(folder / 'work' / f'{k}.pth')
            for k in ('epoch_1', 'epoch_2')
        }
        run.update(
            config=str(folder / 'bake_run.py'),
            calibrated=str(folder / 'calibrated.pth'),
            data_root=data_root)
        if not osp.exists(run['calibrated']):
            base = osp.join(CONFIGS, 'bake', 'resnet18_1xb64_fashion-mnist.py')
            folder.mkdir(exist_ok=True)
            with open(run['config'], 'w') as f:
                f.write(RUN_CONFIG.format(base=base, root=data_root))
            cfg = Config.fromfile(run['config'])
            cfg.work_dir = str(folder / 'work')
            cfg.experiment_name = f'bake_run_{uuid.uuid4().hex}'
            Runner.from_cfg(cfg).train()
            load_script('tools/model_converters/publish_model.py').main(
                [run['epoch_2'], str(folder / 'release')])
            load_script('tools/analysis_tools/calibrate.py').main([
                HELDOUT_CONFIG, run['epoch_2'], '--out', run['calibrated'],
                '--cfg-options', 'model.head.type=BAKEHead',
                *heldout_options(data_root)
            ])
        (run['release'], ) = glob.glob(str(folder / 'release_*.pth'))
    return run


def first_test_images(data_root: str, num: int) -> torch.Tensor:
    """The first ``num`` test images, ``num x 1 x 28 x 28`` uint8, as the
    test dataloader gives them to the model's data preprocessor."""
    with open(osp.join(data_root, 't10k-images-idx3-ubyte'), 'rb') as f:
        data = f.read()[16:16 + num * 28 * 28]
    return torch.from_numpy(np.frombuffer(data, np.uint8).copy()).view(
        num, 1, 28, 28)
