"""Train a model from a config, with mmpretrain's command-line flags.

Single process::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]]

Several processes (GPUs, or CPU processes over gloo where there is no CUDA)
go through ``tools/dist_train.sh``, which passes ``--launcher pytorch``.

Differences from mmpretrain's ``tools/train.py``: ``mmbake`` is imported
(so its types and compatibility fixes are there even if a config forgets
``custom_imports``); bad input, in the command line or in the config, ends
with ``error: <message>`` and exit status 2 instead of a traceback (set
``MMBAKE_DEBUG=1`` to see the traceback); ``--resume`` checks the checkpoint
first (complete, weights-only loadable), skips a checkpoint cut short by a
kill, and reuses the checkpoint's seed when the config has none; ``--amp``
also works without GPU (bfloat16 autocast); the final validation top-1 is
printed last, by every rank of a distributed run; and distributed processes
leave through ``os._exit`` after tearing down the process group (gloo
otherwise aborts at interpreter exit now and then).
"""
import argparse
import glob
import os
import os.path as osp
import sys
from copy import deepcopy
from typing import TYPE_CHECKING, List, Optional, Tuple

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
        help='enable automatic-mixed-precision training (float16 with loss '
        'scaling on a GPU; bfloat16 autocast without GPU)')
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
    if (args.resume not in (None, 'auto') and
            _checkpoint_is_truncated(args.resume)):
        parser.error(f'--resume checkpoint {args.resume} is not complete: '
                     'the file was cut short (e.g. the run was killed while '
                     'saving it); give another checkpoint, or --resume '
                     'alone for the latest complete one in the work dir')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def _checkpoint_is_truncated(path: str) -> bool:
    """See ``mmbake.compat.checkpoint_is_truncated`` (imported lazily)."""
    from mmbake.compat import checkpoint_is_truncated
    return checkpoint_is_truncated(path)


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
    from mmbake.utils import set_work_dir
    cfg.launcher = args.launcher
    set_work_dir(cfg, args.work_dir, args.config)

    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        if not _has_amp_device():
            # CPU autocast runs in bfloat16 only (mmbake.compat lets
            # AmpOptimWrapper build without GPU).
            cfg.optim_wrapper.setdefault('dtype', 'bfloat16')

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


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint that ``--resume`` (without a path) continues from.

    mmengine reads the path in ``<work_dir>/last_checkpoint``. When that
    pointer exists but is empty or names a missing or truncated file (a
    kill while saving, with an mmengine that writes in place), the newest
    complete ``*.pth`` of the work dir is taken instead, with a warning.

    Args:
        work_dir (str): The run's work dir.

    Returns:
        str, optional: The checkpoint, or None without a pointer (mmengine
        then starts from scratch, as it always does).

    Raises:
        ValueError: If the pointer is broken and no complete checkpoint is
            left in the work dir.
    """
    from mmbake.compat import checkpoint_is_truncated

    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        named = f.read().strip()
    if named and osp.isfile(named) and not checkpoint_is_truncated(named):
        return named
    complete = [
        path for path in glob.glob(osp.join(work_dir, '*.pth'))
        if osp.isfile(path) and not checkpoint_is_truncated(path)
    ]
    if not complete:
        raise ValueError(
            f'--resume: {pointer} names {named!r}, which is missing or '
            f'incomplete, and {work_dir} holds no other complete checkpoint; '
            'train without --resume to start over')
    chosen = max(complete, key=osp.getmtime)
    print(
        f'warning: {pointer} names {named!r}, which is missing or '
        f'incomplete; resuming from {chosen}, the newest complete '
        'checkpoint in the work dir',
        file=sys.stderr,
        flush=True)
    return chosen


def prepare_resume(cfg: Config) -> None:
    """Pick and check the checkpoint to resume from; take over its seed.

    The checkpoint is read once with the weights-only unpickler (tensors
    memory-mapped), so a truncated file or one holding code is refused
    before anything is built. mmengine 0.10.7 builds the train dataloader,
    and its sampler's seed, before it restores the seed stored in the
    checkpoint, so with ``randomness.seed=None`` a resumed run would shuffle
    differently from the run it continues: the stored seed is therefore set
    in the config here.

    Args:
        cfg (Config): A config with ``resume=True``; ``load_from`` is the
            checkpoint, or None for the work dir's latest.

    Raises:
        ValueError: If the checkpoint cannot be resumed from.
    """
    from mmbake.compat import load_checkpoint_weights_only

    path = cfg.get('load_from', None)
    if path is None:
        path = find_resume_checkpoint(cfg.work_dir)
        if path is None:
            return
        cfg.load_from = path
    meta = load_checkpoint_weights_only(path).get('meta', None)
    if not isinstance(meta, dict) or 'epoch' not in meta \
            or 'iter' not in meta:
        raise ValueError(
            f'--resume: {path} is not a training checkpoint of mmengine\'s '
            "runner (its meta has no 'epoch'/'iter'); to start from its "
            f'weights, use --cfg-options load_from={path} without --resume')
    randomness = dict(cfg.get('randomness', None) or {})
    if randomness.get('seed', None) is None and meta.get('seed') is not None:
        randomness['seed'] = int(meta['seed'])
        cfg.randomness = randomness
        if os.environ.get('RANK', '0') == '0':
            print(
                f'Resuming with the seed of the checkpoint, '
                f'{randomness["seed"]} (randomness.seed is None in the '
                'config)',
                flush=True)


def build_runner(cfg: Config) -> 'Runner':
    """Build the runner and everything ``Runner.train()`` builds lazily.

    mmengine builds the model in ``Runner.__init__`` but the train
    dataloader (dataset, sampler, batch sampler), the optimizer wrapper and
    the validation loop only in ``train()``; building them here makes every
    bad setting fail before training starts. ``train()`` reuses the built
    objects.

    Args:
        cfg (Config): The merged config.

    Returns:
        Runner: The runner, ready to ``train()``.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    runner.train_loop  # noqa: B018 (the property builds the loop)
    if runner.optim_wrapper is not None:
        runner.optim_wrapper = runner.build_optim_wrapper(
            runner.optim_wrapper)
    runner.val_loop  # noqa: B018
    return runner




def final_top1_line(runner: 'Runner',
                    rank: Optional[Tuple[int, int]] = None) -> Optional[str]:
    """Describe the last validation top-1 recorded by the runner.

    Args:
        runner (Runner): A runner after ``train()``.
        rank (tuple[int, int], optional): ``(rank, world_size)`` to tag the
            line with in a distributed run. Defaults to None.

    Returns:
        str, optional: ``'Final top-1 (val, epoch N): xx.xx'`` (``iter N``
        for iteration-based training; ``, rank R/W`` after ``N`` with
        ``rank``), or None when no validation top-1 was recorded.
    """
    from mmengine.runner import IterBasedTrainLoop

    scalars = runner.message_hub.log_scalars
    if 'val/accuracy/top1' not in scalars:
        return None
    top1 = float(scalars['val/accuracy/top1'].current())
    if isinstance(runner.train_loop, IterBasedTrainLoop):
        where = f'iter {runner.iter}'
    else:
        where = f'epoch {runner.epoch}'
    if rank is not None:
        where += f', rank {rank[0]}/{rank[1]}'
    return f'Final top-1 (val, {where}): {top1:.2f}'






def main(argv: Optional[List[str]] = None) -> None:
    """Train from the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.
    """
    args = parse_args(argv)
    # Registers the BAKE types and applies mmbake.compat, also for configs
    # without custom_imports.
    import mmbake  # noqa: F401
    from mmbake.utils import (BUILD_ERRORS, debug_enabled, exit_with_error,
                              leave_distributed, say)

    cfg = merge_args(Config.fromfile(args.config), args)
    try:
        if cfg.get('resume', False):
            prepare_resume(cfg)
        runner = build_runner(cfg)
    except BUILD_ERRORS as err:
        if debug_enabled():
            raise
        exit_with_error(err)
    runner.train()

    if args.launcher != 'none':
        # Every rank reports the metric it holds: they must agree.
        line = final_top1_line(runner, (runner.rank, runner.world_size))
        if line is not None:
            say(line)
    line = final_top1_line(runner)
    if line is not None and runner.rank == 0:
        say(line)
    if args.launcher != 'none':
        leave_distributed()


if __name__ == '__main__':
    main()
