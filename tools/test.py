"""Test (evaluate) a checkpoint, with mmpretrain's command-line flags.

Single process::

    python tools/test.py CONFIG CHECKPOINT [--out results.pkl]

Several processes go through ``tools/dist_test.sh``. As in ``tools/train.py``,
``mmbake`` is imported, bad input (command line, config, or a checkpoint
that is truncated or holds objects the weights-only unpickler refuses)
ends with ``error: <message>`` and exit status 2 instead of a traceback
(``MMBAKE_DEBUG=1`` shows it), the test top-1 is printed last, and
distributed processes leave through ``os._exit`` after tearing down the
process group.
"""
import argparse
import os
import os.path as osp
from typing import List, Optional

# Light imports only: torch, mmpretrain and mmbake load in main(), after the
# command line is checked, so that bad input is answered at once.
from mmengine.config import Config, ConfigDict, DictAction

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
PICKLE_SUFFIXES = ('.pkl', '.pickle')
METRIC_SUFFIXES = ('.json', '.yaml', '.yml') + PICKLE_SUFFIXES


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        argparse.Namespace: The arguments. Bad input exits with status 2.
    """
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the dir to save the evaluation log and metrics')
    parser.add_argument(
        '--out',
        help='dump the results to this file: the predictions as a pickle '
        '(.pkl), or with --out-item metrics the metrics (.json, .yaml or '
        '.pkl)')
    parser.add_argument(
        '--out-item',
        choices=['pred', 'metrics'],
        default='pred',
        help='what --out holds (default: pred)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, as key=value pairs (e.g. '
        'test_dataloader.batch_size=128)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision inference')
    parser.add_argument(
        '--show-dir',
        help='save an image with its prediction drawn on it, for every '
        '--interval-th test sample, into this directory')
    parser.add_argument(
        '--interval',
        type=int,
        default=1,
        help='visualize every INTERVAL-th sample with --show-dir '
        '(default: 1)')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='disable the pin_memory option of the dataloader')
    parser.add_argument(
        '--launcher',
        choices=LAUNCHERS,
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)

    if not osp.isfile(args.config):
        parser.error(f'config file not found: {args.config}')
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint file not found: {args.checkpoint}')
    if args.out is not None:
        allowed = (PICKLE_SUFFIXES
                   if args.out_item == 'pred' else METRIC_SUFFIXES)
        if not args.out.endswith(allowed):
            parser.error(f'--out {args.out}: with --out-item '
                         f'{args.out_item} the file must end with one of '
                         f'{allowed}')
    if args.interval < 1:
        parser.error(f'--interval must be >= 1, got {args.interval}')
    if args.launcher == 'pytorch' and 'RANK' not in os.environ:
        parser.error('--launcher pytorch needs the environment of torchrun '
                     '(RANK, WORLD_SIZE, ...); start it through '
                     'tools/dist_test.sh CONFIG CHECKPOINT GPUS')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


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
    cfg.load_from = args.checkpoint
    # Testing never resumes a training state.
    cfg.resume = False

    if args.amp:
        cfg.test_cfg.fp16 = True

    if args.show_dir is not None:
        hooks = cfg.get('default_hooks', {})
        if 'visualization' not in hooks:
            raise SystemExit(
                'error: --show-dir needs default_hooks.visualization='
                'dict(type="VisualizationHook") in the config (mmpretrain\'s '
                'default_runtime has it)')
        hooks.visualization.enable = True
        hooks.visualization.out_dir = args.show_dir
        hooks.visualization.interval = args.interval

    loader_cfg = ConfigDict(
        pin_memory=True, collate_fn=dict(type='default_collate'))
    loader_cfg.update(cfg.test_dataloader)
    if args.no_pin_memory:
        loader_cfg.pin_memory = False
    cfg.test_dataloader = loader_cfg

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if not cfg.test_dataloader.get('num_workers', 0):
        # torch's DataLoader refuses persistent workers without workers.
        cfg.test_dataloader.persistent_workers = False
    return cfg




def main(argv: Optional[List[str]] = None) -> None:
    """Test from the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.
    """
    args = parse_args(argv)
    # Registers the BAKE types and applies mmbake.compat, also for configs
    # without custom_imports.
    import mmbake  # noqa: F401
    from mmbake.utils import (BUILD_ERRORS, debug_enabled, exit_with_error,
                              leave_distributed)
    import mmengine
    from mmengine.evaluator import DumpResults
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from mmbake.compat import load_checkpoint_weights_only

    cfg = merge_args(Config.fromfile(args.config), args)
    try:
        # Refuse a truncated file or one holding code before building
        # anything (mmengine would load it inside runner.test()).
        load_checkpoint_weights_only(args.checkpoint)
        if 'runner_type' not in cfg:
            runner = Runner.from_cfg(cfg)
        else:
            runner = RUNNERS.build(cfg)
        # Built lazily by runner.test(); built here so that bad dataloader
        # or evaluator settings are reported before testing starts.
        runner.test_loop  # noqa: B018
    except BUILD_ERRORS as err:
        if debug_enabled():
            raise
        exit_with_error(err)

    if args.out is not None and args.out_item == 'pred':
        runner.test_evaluator.metrics.append(
            DumpResults(out_file_path=args.out))
    metrics = runner.test()

    if runner.rank == 0:
        if args.out is not None and args.out_item == 'metrics':
            mmengine.dump(metrics, args.out)
        if 'accuracy/top1' in metrics:
            print(f'Test top-1: {float(metrics["accuracy/top1"]):.2f}',
                  flush=True)
    if args.launcher != 'none':
        leave_distributed()


if __name__ == '__main__':
    main()
