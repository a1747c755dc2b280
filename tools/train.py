"""Train a model from a config, with mmpretrain's command-line flags.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]]

Several processes go through ``tools/dist_train.sh``. Unlike mmpretrain's
tool: ``mmbake`` is imported; the runner gets ``SafeCheckpointHook`` and,
without GPU, gloo (``mmbake_tools.cli.new_runner``); bad input (command
line, config, missing data, labels the head has no class for) ends with
one ``error:`` line and exit status 2 (``MMBAKE_DEBUG=1``: the
traceback); ``--resume`` checks the checkpoint first, skips one cut short
by a kill and reuses its seed when the config has none; ``--amp`` without
GPU trains in bfloat16 (``BFloat16OptimWrapper``); the final validation
top-1 is printed last, by every rank; distributed processes leave through
``os._exit``.
"""
import argparse
import glob
import os
import os.path as osp
import sys
from typing import TYPE_CHECKING, List, Optional

# tools/mmbake_tools, found beside this script.
from mmbake_tools.cli import (apply_cfg_options, errors_as_one_line,
                              gather_in_work_dir, leave, load_config,
                              new_parser, new_runner, parse_checked, say)
from mmbake_tools.data_checks import (check_data_paths, check_labels_fit,
                                      reading_data)
from mmengine.config import Config

if TYPE_CHECKING:
    from mmengine.runner import Runner

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line; bad input exits with status 2."""
    parser = new_parser('Train a model', work_dir_help='logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        help='resume from the checkpoint PATH; without PATH (or "auto"), '
        'from the latest checkpoint in the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision (float16 on a GPU; bfloat16 without GPU)')
    parser.add_argument(
        '--no-validate', action='store_true', help='skip validation')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by the total batch size over the config\'s '
        'auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='turn the dataloaders\' persistent_workers off')
    args = parse_checked(parser, argv, 'tools/dist_train.sh CONFIG GPUS')

    if args.resume in (None, 'auto'):
        return args
    if not osp.isfile(args.resume):
        parser.error(f'--resume checkpoint not found: {args.resume} (give '
                     'an existing checkpoint file, or --resume alone to '
                     'continue from the latest checkpoint in the work dir)')
    from mmbake.utils import checkpoint_is_truncated
    if checkpoint_is_truncated(args.resume):
        parser.error(f'--resume checkpoint {args.resume} is not complete: '
                     'the file was cut short (e.g. the run was killed while '
                     'saving it); give another checkpoint, or --resume '
                     'alone for the latest complete one in the work dir')
    return args


def merge_args(args: argparse.Namespace) -> Config:
    """Load the config and fold the command-line arguments into it."""
    cfg = load_config(args, LOADERS, persistent_workers=True)
    if args.resume is not None:
        cfg.resume = True
        cfg.load_from = None if args.resume == 'auto' else args.resume
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise ValueError('--auto-scale-lr needs auto_scale_lr='
                             'dict(base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    apply_cfg_options(cfg, args, LOADERS)
    wrapper = cfg.optim_wrapper
    if args.amp or wrapper.get('type') == 'AmpOptimWrapper':
        from mmbake.utils import cpu_only
        if not cpu_only():
            wrapper.type = 'AmpOptimWrapper'
            wrapper.setdefault('loss_scale', 'dynamic')
        elif wrapper.get('dtype') not in (None, 'bfloat16'):
            raise ValueError("optim_wrapper.dtype must be 'bfloat16' (the "
                             'only dtype of CPU autocast), but got '
                             f"{wrapper.dtype!r}")
        else:
            # mmengine's AmpOptimWrapper asserts a GPU; bfloat16 autocast
            # needs no loss scaling.
            wrapper.type = 'BFloat16OptimWrapper'
            wrapper.pop('dtype', None)
            wrapper.pop('loss_scale', None)
    # After the --cfg-options merge, so that options for the val dataloader
    # (shared with test-time settings) do not clash with its removal.
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    return cfg


def _find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """``<work_dir>/last_checkpoint``'s checkpoint (None without pointer);
    if it is empty or names a missing or truncated file (a kill while
    mmengine's CheckpointHook saved), the newest complete ``*.pth``."""
    from mmbake.utils import checkpoint_is_truncated

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


def _prepare_resume(cfg: Config) -> None:
    """Pick the checkpoint to resume from, refuse a truncated one or one
    holding code before anything is built, and take over its seed:
    mmengine 0.10.7 seeds the train sampler before it restores the seed of
    the checkpoint, so with ``randomness.seed=None`` a resumed run would
    shuffle unlike the run it continues."""
    from mmbake.utils import load_checkpoint_weights_only

    path = cfg.get('load_from', None)
    if path is None:
        path = _find_resume_checkpoint(cfg.work_dir)
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
    """The runner, with the train dataloader, the optimizer wrapper and
    the validation loop built (``train()`` reuses them), so that a bad
    setting, or data that is missing or does not fit the head, fails
    before training starts."""
    runner = new_runner(cfg)
    with reading_data(cfg, 'train_dataloader'):
        runner.train_loop  # noqa: B018 (the property builds the loop)
    check_labels_fit(runner.model, runner.train_dataloader.dataset,
                     'train_dataloader')
    if runner.optim_wrapper is not None:
        runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    with reading_data(cfg, 'val_dataloader'):
        val_loop = runner.val_loop
    if val_loop is not None and hasattr(val_loop, 'dataloader'):
        check_labels_fit(runner.model, val_loop.dataloader.dataset,
                         'val_dataloader')
        gather_in_work_dir(val_loop.evaluator, cfg.work_dir)
    return runner


def _say_final_top1(runner: 'Runner', tag: str = '') -> None:
    """Print ``Final top-1 (val, epoch N<tag>): xx.xx`` (``iter N`` for
    iteration-based training) if validation recorded a top-1."""
    from mmengine.runner import IterBasedTrainLoop

    scalars = runner.message_hub.log_scalars
    if 'val/accuracy/top1' not in scalars:
        return
    top1 = float(scalars['val/accuracy/top1'].current())
    where = (f'iter {runner.iter}' if isinstance(
        runner.train_loop, IterBasedTrainLoop) else f'epoch {runner.epoch}')
    say(f'Final top-1 (val, {where}{tag}): {top1:.2f}')


def main(argv: Optional[List[str]] = None) -> None:
    """Train from the command line."""
    args = parse_args(argv)
    # Registers the BAKE types, also for configs without custom_imports.
    import mmbake  # noqa: F401

    with errors_as_one_line():
        cfg = merge_args(args)
        check_data_paths(cfg, ('train_dataloader', 'val_dataloader'))
        if cfg.get('resume', False):
            _prepare_resume(cfg)
        runner = build_runner(cfg)
    runner.train()

    if args.launcher != 'none':
        # Every rank reports the metric it holds: they must agree.
        _say_final_top1(runner, f', rank {runner.rank}/{runner.world_size}')
    if runner.rank == 0:
        _say_final_top1(runner)
    if args.launcher != 'none':
        leave()


if __name__ == '__main__':
    main()
