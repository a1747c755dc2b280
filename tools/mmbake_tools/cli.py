"""The command line, the config, errors and exits of mmbake's tools."""
import argparse
import contextlib
import logging
import os
import os.path as osp
import sys
from typing import (TYPE_CHECKING, Any, Iterator, List, NoReturn, Optional,
                    Sequence)

# Light imports only: torch, mmpretrain and mmbake load after the command
# line is checked, so that bad input is answered at once.
from mmengine.config import Config, ConfigDict, DictAction

if TYPE_CHECKING:
    from mmengine.runner import Runner

# Errors that building a runner from a bad config raises (a registry miss, a
# bad argument); reported as one line unless MMBAKE_DEBUG=1.
BUILD_ERRORS = (ValueError, KeyError, TypeError)


def new_parser(description: str,
               checkpoint_help: Optional[str] = None,
               work_dir_help: Optional[str] = None) -> argparse.ArgumentParser:
    """A parser with a config, a ``checkpoint`` if ``checkpoint_help`` is
    given and ``--cfg-options``; with ``work_dir_help``, also
    ``--work-dir``, ``--no-pin-memory``, ``--launcher`` and
    ``--local-rank``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file path')
    if checkpoint_help is not None:
        parser.add_argument('checkpoint', help=checkpoint_help)
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, as key=value pairs (e.g. '
        'train_cfg.max_epochs=2 "optim_wrapper.optimizer.lr=0.05"); a list '
        'value is written key="[a,b]" or key=a,b, without spaces')
    if work_dir_help is None:
        return parser
    parser.add_argument('--work-dir', help=work_dir_help)
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='turn the dataloaders\' pin_memory off')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or
    # --local_rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def parse_checked(parser: argparse.ArgumentParser,
                  argv: Optional[List[str]],
                  launch_script: Optional[str] = None) -> argparse.Namespace:
    """Parse the command line; refuse a config or checkpoint that is not a
    file, and ``--launcher pytorch`` outside torchrun (naming
    ``launch_script``), with exit status 2."""
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file not found: {args.config}')
    checkpoint = getattr(args, 'checkpoint', None)
    if checkpoint is not None and not osp.isfile(checkpoint):
        parser.error(f'checkpoint file not found: {checkpoint}')
    if getattr(args, 'launcher', 'none') == 'pytorch' \
            and 'RANK' not in os.environ:
        parser.error('--launcher pytorch needs the environment of torchrun '
                     f'(RANK, WORLD_SIZE, ...); start it through '
                     f'{launch_script}')
    if hasattr(args, 'local_rank'):
        os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_config(args: argparse.Namespace, loaders: Sequence[str],
                persistent_workers: bool) -> Config:
    """Load the config with the launcher, work dir and dataloader defaults.

    As in mmpretrain's tools: the work dir is ``--work-dir``, else the
    config's, else ``./work_dirs/<config name>``; ``loaders`` default to
    ``pin_memory`` (and ``persistent_workers`` if asked), which the config
    overrides and the command line turns off. :func:`apply_cfg_options`
    comes last.
    """
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    for field in loaders:
        if cfg.get(field, None) is None:
            continue
        loader_cfg = ConfigDict(
            pin_memory=True, collate_fn=dict(type='default_collate'))
        if persistent_workers:
            loader_cfg.persistent_workers = True
        loader_cfg.update(cfg[field])
        if args.no_pin_memory:
            loader_cfg.pin_memory = False
        if getattr(args, 'no_persistent_workers', False):
            loader_cfg.persistent_workers = False
        cfg[field] = loader_cfg
    return cfg


def apply_cfg_options(
    cfg: Config, args: argparse.Namespace,
    loaders: Sequence[str] = ()) -> Config:
    """Merge ``--cfg-options`` into ``cfg``, the last word on the config;
    ``persistent_workers`` of ``loaders`` without workers is turned off
    (torch's DataLoader refuses both)."""
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    for field in loaders:
        loader_cfg = cfg.get(field, None)
        if loader_cfg is not None and not loader_cfg.get('num_workers', 0):
            loader_cfg.persistent_workers = False
    return cfg


def new_runner(cfg: Config) -> 'Runner':
    """The config's runner (mmengine's, unless ``runner_type``), with
    mmengine's ``CheckpointHook`` made mmbake's ``SafeCheckpointHook`` and,
    for ``--launcher pytorch`` without GPU, the gloo process group started
    and DDP built without ``device_ids`` (mmbake/utils/cpu_distributed.py).
    """
    import torch.distributed as dist
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from mmbake.utils import (cpu_model_wrapper_cfg, cpu_only,
                              init_gloo_process_group)

    checkpoint = (cfg.get('default_hooks', None) or {}).get('checkpoint')
    if isinstance(checkpoint, dict) and checkpoint.get('type') in (
            'CheckpointHook', 'mmengine.CheckpointHook'):
        checkpoint.type = 'SafeCheckpointHook'
    if cfg.launcher == 'pytorch' and cpu_only() and not dist.is_initialized():
        dist_cfg = (cfg.get('env_cfg', None) or {}).get('dist_cfg', None)
        init_gloo_process_group((dist_cfg or {}).get('backend'))
        cfg.model_wrapper_cfg = cpu_model_wrapper_cfg(
            cfg.get('model_wrapper_cfg', None),
            cfg.get('find_unused_parameters', False))
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def gather_in_work_dir(evaluator: Any, work_dir: str) -> None:
    """Let distributed evaluation gather its results in the work dir
    (shared by the ranks): without a folder, mmengine 0.10.7's
    ``collect_results`` leaves ``.dist_test/`` in the current directory."""
    for metric in evaluator.metrics:
        if getattr(metric, 'collect_dir', None) is None:
            metric.collect_dir = osp.join(work_dir, '.dist_test')


@contextlib.contextmanager
def errors_as_one_line() -> Iterator[None]:
    """Report :data:`BUILD_ERRORS` as ``error: <message>``, exit status 2
    (``MMBAKE_DEBUG=1``: with their traceback instead)."""
    try:
        yield
    except BUILD_ERRORS as err:
        if os.environ.get('MMBAKE_DEBUG', '0') not in ('', '0'):
            raise
        # A KeyError's message is its argument (str() would quote it).
        message = err.args[0] if isinstance(err, KeyError) and err.args \
            else err
        print(f'error: {message}', file=sys.stderr, flush=True)
        leave(2)


def say(line: str) -> None:
    """Print ``line`` in a single write, so that the lines of ranks sharing
    a terminal or pipe do not interleave."""
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


def leave(status: int = 0) -> NoReturn:
    """End the tool with ``status``. About 1 in 40 two-process gloo runs
    (torch 2.14) abort in interpreter teardown, so a distributed process
    tears the process group down (printing ``Rank R/W finished.`` on
    success) and leaves through ``os._exit``; a failed single process
    raises ``SystemExit``."""
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        rank, world_size = torch_dist.get_rank(), torch_dist.get_world_size()
        torch_dist.destroy_process_group()
        if status == 0:
            say(f'Rank {rank}/{world_size} finished.')
    elif status != 0:
        raise SystemExit(status)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
