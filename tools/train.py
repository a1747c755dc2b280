"""Train a model from a config, with mmpretrain's command-line flags.

Single process::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]]

Several processes (GPUs, or CPU processes over gloo where there is no CUDA)
go through ``tools/dist_train.sh``, which passes ``--launcher pytorch``.

Differences from mmpretrain's ``tools/train.py``: ``mmbake`` is imported
(so its types and compatibility fixes are there even if a config forgets
``custom_imports``); bad input, in the command line, the config or the data
(a dataset that is not there, labels the head has no class for), ends with
``error: <message>`` and exit status 2 instead of a traceback (set
``MMBAKE_DEBUG=1`` to see the traceback); ``--resume`` checks the checkpoint
first (complete, weights-only loadable), skips a checkpoint cut short by a
kill, and reuses the checkpoint's seed when the config has none; ``--amp``
also works without GPU (bfloat16 autocast); the final validation top-1 is
printed last, by every rank of a distributed run; and distributed processes
leave through ``os._exit`` after tearing down the process group (gloo
otherwise aborts at interpreter exit now and then).
"""
import argparse
import os.path as osp
from typing import TYPE_CHECKING, List, Optional, Tuple

from mmengine.config import Config

# tools/mmbake_tools, found beside this script.
from mmbake_tools.cli import (add_run_args, apply_cfg_options,
                              errors_as_one_line, leave_distributed,
                              load_config, new_parser, new_runner,
                              parse_checked, say)
from mmbake_tools.data_checks import (check_data_paths, check_labels_fit,
                                      reading_data)

if TYPE_CHECKING:
    from mmengine.runner import Runner

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        argparse.Namespace: The arguments. Bad input exits with status 2.
    """
    parser = new_parser('Train a model')
    add_run_args(parser, 'the dir to save logs and models')
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
        '--no-persistent-workers',
        action='store_true',
        help='disable the persistent_workers option of the dataloaders')
    args = parse_checked(parser, argv, 'tools/dist_train.sh CONFIG GPUS')

    if args.resume in (None, 'auto'):
        return args
    if not osp.isfile(args.resume):
        parser.error(f'--resume checkpoint not found: {args.resume} (give '
                     'an existing checkpoint file, or --resume alone to '
                     'continue from the latest checkpoint in the work dir)')
    from mmbake.compat import checkpoint_is_truncated
    if checkpoint_is_truncated(args.resume):
        parser.error(f'--resume checkpoint {args.resume} is not complete: '
                     'the file was cut short (e.g. the run was killed while '
                     'saving it); give another checkpoint, or --resume '
                     'alone for the latest complete one in the work dir')
    return args


def merge_args(args: argparse.Namespace) -> Config:
    """Load the config and fold the command-line arguments into it.

    Args:
        args (argparse.Namespace): The parsed arguments.

    Returns:
        Config: The merged config.
    """
    cfg = load_config(args, LOADERS, persistent_workers=True)
    if args.amp:
        from mmengine.device import (is_cuda_available, is_mlu_available,
                                     is_npu_available)
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        if not (is_cuda_available() or is_npu_available()
                or is_mlu_available()):
            # CPU autocast runs in bfloat16 only (mmbake.compat lets
            # AmpOptimWrapper build without GPU).
            cfg.optim_wrapper.setdefault('dtype', 'bfloat16')
    if args.resume is not None:
        cfg.resume = True
        cfg.load_from = None if args.resume == 'auto' else args.resume
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise SystemExit('error: --auto-scale-lr needs auto_scale_lr='
                             'dict(base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    apply_cfg_options(cfg, args, LOADERS)
    # After the --cfg-options merge, so that options for the val dataloader
    # (shared with test-time settings) do not clash with its removal.
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    return cfg


def build_runner(cfg: Config) -> 'Runner':
    """Build the runner and everything ``Runner.train()`` builds lazily.

    mmengine builds the model in ``Runner.__init__`` but the train
    dataloader (dataset, sampler, batch sampler), the optimizer wrapper and
    the validation loop only in ``train()``; building them here makes every
    bad setting, and data that is missing or does not fit the head, fail
    before training starts. ``train()`` reuses the built objects.

    Args:
        cfg (Config): The merged config.

    Returns:
        Runner: The runner, ready to ``train()``.
    """
    runner = new_runner(cfg)
    with reading_data(cfg, 'train_dataloader'):
        runner.train_loop  # noqa: B018 (the property builds the loop)
    check_labels_fit(runner.model, runner.train_dataloader.dataset,
                     'train_dataloader')
    if runner.optim_wrapper is not None:
        runner.optim_wrapper = runner.build_optim_wrapper(
            runner.optim_wrapper)
    with reading_data(cfg, 'val_dataloader'):
        val_loop = runner.val_loop
    if val_loop is not None and hasattr(val_loop, 'dataloader'):
        check_labels_fit(runner.model, val_loop.dataloader.dataset,
                         'val_dataloader')
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
    from mmbake_tools.resume import prepare_resume

    cfg = merge_args(args)
    with errors_as_one_line():
        check_data_paths(cfg, ('train_dataloader', 'val_dataloader'))
        if cfg.get('resume', False):
            prepare_resume(cfg)
        runner = build_runner(cfg)
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
