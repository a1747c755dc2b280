"""Images per second of the real runner: BAKE ResNet-50 beside its base.

Writes an ImageNet-layout folder of generated JPEGs with the ``meta/*.txt``
lists that mmpretrain's ``ImageNet`` reads, then trains
``configs/bake/resnet50_8xb32_imagenet.py`` and its vanilla base
``mmpretrain::resnet/resnet50_8xb32_in1k.py`` on it with ``tools/train.py``,
one after the other (other flags, e.g. ``--amp``, pass through), and prints
the median of the logged seconds per iteration after the first epoch::

    python benchmarks/runner_speed.py OUT_DIR --amp
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
from glob import glob

import cv2
import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = dict(
    vanilla="_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'\n",
    BAKE=f"_base_ = '{ROOT}/configs/bake/resnet50_8xb32_imagenet.py'\n")
LOADERS, TIMES = ('train_dataloader', 'val_dataloader'), ('time', 'data_time')


def write_images(root: str, classes: int, per_class: int, size: int) -> None:
    """Smooth random colour JPEGs, ``per_class`` a class to train and 2 to
    validate, listed with their labels in ``meta/{train,val}.txt``."""
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split, num in (('train', per_class), ('val', 2)):
        names = [
            f'n{c:08d}/{i}.JPEG' for c in range(classes) for i in range(num)
        ]
        for name in names:
            path = osp.join(root, split, name)
            os.makedirs(osp.dirname(path), exist_ok=True)
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            cv2.imwrite(path, cv2.resize(small, (size, size)))
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(f'{n} {k // num}\n' for k, n in enumerate(names))


def train(name: str, out: str, epochs: int, flags: list) -> dict:
    """Train one config; the median logged times after the first epoch."""
    config, data = osp.join(out, f'{name}.py'), osp.join(out, 'imagenet')
    with open(config, 'w') as f:
        f.write(CONFIGS[name])
    options = [f'{k}.dataset.data_root={data}' for k in LOADERS] + [
        f'train_cfg.max_epochs={epochs}', 'default_hooks.logger.interval=10',
        f'train_cfg.val_interval={epochs}',
        f'default_hooks.checkpoint.interval={epochs}'
    ]
    path = os.pathsep.join(filter(None, (ROOT, os.getenv('PYTHONPATH'))))
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config]
    cmd += ['--work-dir', osp.join(out, name), *flags, '--cfg-options']
    subprocess.run(
        cmd + options, check=True, env=dict(os.environ, PYTHONPATH=path))
    scalars, = glob(osp.join(out, name, '*', 'vis_data', 'scalars.json'))
    with open(scalars) as f:
        logs = [json.loads(line) for line in f]
    logs = [r for r in logs if 'loss' in r and r['epoch'] > 1]
    times = {k: statistics.median(r[k] for r in logs) for k in TIMES}
    return dict(times, windows=len(logs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', help='folder for the images and work dirs')
    for flag, default in (('--classes', 100), ('--per-class', 20),
                          ('--size', 256), ('--epochs', 5)):
        parser.add_argument(flag, type=int, default=default)
    args, flags = parser.parse_known_args()
    out = osp.abspath(args.out)
    write_images(
        osp.join(out, 'imagenet'), args.classes, args.per_class, args.size)
    times = {name: train(name, out, args.epochs, flags) for name in CONFIGS}
    for name, t in times.items():
        print(f'runner: {name:8} {32 / t["time"]:7.1f} images/s, '
              f'{t["time"] * 1e3:.1f} ms per iteration of 32 (data '
              f'{t["data_time"] * 1e3:.1f} ms), median of {t["windows"]} '
              f'logged windows, flags {flags}')
    ratio = times['BAKE']['time'] / times['vanilla']['time']
    print(f'runner: BAKE / vanilla seconds per iteration {ratio:.3f}')


if __name__ == '__main__':
    main()
