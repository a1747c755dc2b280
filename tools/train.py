"""Train a model from a config, with mmpretrain's command-line flags.

Single process::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]]

Several processes (GPUs, or CPU processes over gloo where there is no CUDA)
go through ``tools/dist_train.sh``, which passes ``--launcher pytorch``.

Differences from mmpretrain's ``tools/train.py``: ``mmbake`` is imported
(so its types and compatibility fixes are there even if a config forgets
``custom_imports``), bad input ends with a message instead of a traceback,
the final validation top-1 is printed last, and distributed processes leave
through ``os._exit`` after tearing down the process group (gloo otherwise
aborts at interpreter exit now and then).
"""
import argparse
import logging
import os
import os.path as osp
import sys
from copy import deepcopy
from typing import TYPE_CHECKING, List, Optional

# Light imports only: torch, mmpretrain and mmbake load in main(), after the
# command line is checked, so that bad input is answered at once.
from mmengine.config import Config, ConfigDict, DictAction

if TYPE_CHECKING:
    from mmengine.runner import Runner

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        argparse.Namespace: The arguments. Bad input exits with status 2.
    """
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the checkpoint PATH; without PATH (or "auto"), '
        'from the latest checkpoint in the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision training (needs a GPU)')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate the checkpoints during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the actual total batch size over '
        'the config\'s auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='disable the pin_memory option of the dataloaders')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='disable the persistent_workers option of the dataloaders')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, as key=value pairs (e.g. '
        'train_cfg.max_epochs=2 "optim_wrapper.optimizer.lr=0.05"); a list '
        'value is written key="[a,b]" or key=a,b, without spaces')
    parser.add_argument(
        '--launcher',
        choices=LAUNCHERS,
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or
    # --local_rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)

    if not osp.isfile(args.config):
        parser.error(f'config file not found: {args.config}')
    if args.resume not in (None, 'auto') and not osp.isfile(args.resume):
        parser.error(f'--resume checkpoint not found: {args.resume} (give '
                     'an existing checkpoint file, or --resume alone to '
                     'continue from the latest checkpoint in the work dir)')
    if args.launcher == 'pytorch' and 'RANK' not in os.environ:
        parser.error('--launcher pytorch needs the environment of torchrun '
                     '(RANK, WORLD_SIZE, ...); start it through '
                     'tools/dist_train.sh CONFIG GPUS')
    if args.amp and not _has_amp_device():
        parser.error('--amp needs a CUDA, NPU or MLU device; none was found')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def _has_amp_device() -> bool:
    """Whether mmengine's AmpOptimWrapper has a device to run on."""
    from mmengine.device import (is_cuda_available, is_mlu_available,
                                 is_npu_available)
    return is_cuda_available() or is_npu_available() or is_mlu_available()


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Fold the command-line arguments into the config.

    Args:
        cfg (Config): The loaded config.
        args (argparse.Namespace): The parsed arguments.

    Returns:
        Config: The same config, updated.
    """
    cfg.launcher = args.launcher
    # work_dir priority: command line > config > ./work_dirs/<config name>.
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise SystemExit('error: --auto-scale-lr needs auto_scale_lr='
                             'dict(base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True

    # The same dataloader defaults as mmpretrain's tools/train.py; a value
    # set in the config wins over them.
    defaults = ConfigDict(
        pin_memory=True,
        persistent_workers=True,
        collate_fn=dict(type='default_collate'))
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(field, None) is None:
            continue
        loader_cfg = deepcopy(defaults)
        loader_cfg.update(cfg[field])
        if args.no_pin_memory:
            loader_cfg.pin_memory = False
        if args.no_persistent_workers:
            loader_cfg.persistent_workers = False
        cfg[field] = loader_cfg

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    # After the --cfg-options merge, so that options for the val dataloader
    # (shared with test-time settings) do not clash with its removal.
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader_cfg = cfg.get(field, None)
        if loader_cfg is not None and not loader_cfg.get('num_workers', 0):
            # torch's DataLoader refuses persistent workers without workers.
            loader_cfg.persistent_workers = False
    return cfg


def final_top1_line(runner: 'Runner') -> Optional[str]:
    """Describe the last validation top-1 recorded by the runner.

    Args:
        runner (Runner): A runner after ``train()``.

    Returns:
        str, optional: ``'Final top-1 (val, epoch N): xx.xx'``, or None when
        no validation top-1 was recorded.
    """
    scalars = runner.message_hub.log_scalars
    if 'val/accuracy/top1' not in scalars:
        return None
    top1 = float(scalars['val/accuracy/top1'].current())
    return f'Final top-1 (val, epoch {runner.epoch}): {top1:.2f}'


def leave_distributed() -> None:
    """End a distributed process without gloo's occasional exit abort.

    About 1 in 40 two-process gloo runs (torch 2.14) die with SIGABRT in
    interpreter teardown after the work is done; tearing the process group
    down and leaving through ``os._exit`` avoids that teardown.
    """
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        rank, world_size = torch_dist.get_rank(), torch_dist.get_world_size()
        torch_dist.destroy_process_group()
        print(f'Rank {rank}/{world_size} finished.', flush=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: Optional[List[str]] = None) -> None:
    """Train from the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.
    """
    args = parse_args(argv)
    # Registers the BAKE types and applies mmbake.compat, also for configs
    # without custom_imports.
    import mmbake  # noqa: F401
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    cfg = merge_args(Config.fromfile(args.config), args)

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    runner.train()

    line = final_top1_line(runner)
    if line is not None and runner.rank == 0:
        print(line, flush=True)
    if args.launcher != 'none':
        leave_distributed()


if __name__ == '__main__':
    main()
