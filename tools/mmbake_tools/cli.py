"""The command line, the config, errors and exits of mmbake's tools."""
import argparse
import contextlib
import logging
import os
import os.path as osp
import sys
from copy import deepcopy
from typing import (TYPE_CHECKING, Iterator, List, NoReturn, Optional,
                    Sequence)

# Light imports only: torch, mmpretrain and mmbake load after the command
# line is checked, so that bad input is answered at once.
from mmengine.config import Config, ConfigDict, DictAction

if TYPE_CHECKING:
    from mmengine.runner import Runner

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
# Errors that building a runner from a bad config raises (a registry miss, a
# bad argument); the tools report them as one line instead of a traceback.
BUILD_ERRORS = (ValueError, KeyError, TypeError)
# Set to 1 to see the traceback of such an error.
DEBUG_ENV = 'MMBAKE_DEBUG'


def new_parser(description: str,
               checkpoint_help: Optional[str] = None
               ) -> argparse.ArgumentParser:
    """A parser with what every tool takes: a config and ``--cfg-options``.

    Args:
        description (str): What the tool does.
        checkpoint_help (str, optional): Help of a second positional
            argument, ``checkpoint``; none when None.

    Returns:
        argparse.ArgumentParser: The parser, for the tool's own arguments.
    """
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
    return parser


def add_run_args(parser: argparse.ArgumentParser, work_dir_help: str) -> None:
    """Add the arguments of a tool that runs mmengine's runner.

    ``--work-dir``, ``--no-pin-memory``, ``--launcher`` and the
    ``--local-rank`` that ``torch.distributed.launch`` passes.

    Args:
        parser (argparse.ArgumentParser): The tool's parser.
        work_dir_help (str): Help of ``--work-dir``.
    """
    parser.add_argument('--work-dir', help=work_dir_help)
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='disable the pin_memory option of the dataloaders')
    parser.add_argument(
        '--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or
    # --local_rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_checked(parser: argparse.ArgumentParser,
                  argv: Optional[List[str]],
                  launch_script: Optional[str] = None) -> argparse.Namespace:
    """Parse the command line and check what every tool needs.

    The config (and checkpoint) must be files; ``--launcher pytorch`` needs
    torchrun's environment. Bad input exits with status 2.

    Args:
        parser (argparse.ArgumentParser): The tool's parser.
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.
        launch_script (str, optional): How to start the tool on several
            processes, named when ``--launcher pytorch`` lacks torchrun.

    Returns:
        argparse.Namespace: The arguments.
    """
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


def set_work_dir(cfg: Config, work_dir: Optional[str],
                 config_path: str) -> None:
    """Set ``cfg.work_dir`` as mmpretrain's tools do.

    Priority: the command line, then the config, then
    ``./work_dirs/<config file name without extension>``.

    Args:
        cfg (Config): The loaded config, updated in place.
        work_dir (str, optional): ``--work-dir`` from the command line.
        config_path (str): Path of the config file.
    """
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])


def load_config(args: argparse.Namespace, loaders: Sequence[str],
                persistent_workers: bool) -> Config:
    """Load the config with the launcher, work dir and dataloader defaults.

    The dataloader defaults are those of mmpretrain's tools; a value set in
    the config wins over them.

    Args:
        args (argparse.Namespace): Arguments of :func:`add_run_args`.
        loaders (Sequence[str]): The dataloader fields the tool uses.
        persistent_workers (bool): Default ``persistent_workers`` to True
            (training) unless ``args.no_persistent_workers``.

    Returns:
        Config: The config; :func:`apply_cfg_options` comes last.
    """
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    set_work_dir(cfg, args.work_dir, args.config)
    defaults = ConfigDict(
        pin_memory=True, collate_fn=dict(type='default_collate'))
    if persistent_workers:
        defaults.persistent_workers = True
    for field in loaders:
        if cfg.get(field, None) is None:
            continue
        loader_cfg = deepcopy(defaults)
        loader_cfg.update(cfg[field])
        if args.no_pin_memory:
            loader_cfg.pin_memory = False
        if getattr(args, 'no_persistent_workers', False):
            loader_cfg.persistent_workers = False
        cfg[field] = loader_cfg
    return cfg


def apply_cfg_options(cfg: Config, args: argparse.Namespace,
                      loaders: Sequence[str] = ()) -> Config:
    """Merge ``--cfg-options``, the last word on the config.

    Args:
        cfg (Config): The config, updated in place.
        args (argparse.Namespace): Arguments of :func:`new_parser`.
        loaders (Sequence[str]): Dataloader fields whose
            ``persistent_workers`` must be off without workers (torch's
            DataLoader refuses that combination).

    Returns:
        Config: ``cfg``.
    """
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    for field in loaders:
        loader_cfg = cfg.get(field, None)
        if loader_cfg is not None and not loader_cfg.get('num_workers', 0):
            loader_cfg.persistent_workers = False
    return cfg


def new_runner(cfg: Config) -> 'Runner':
    """Build the config's runner (mmengine's, unless ``runner_type``).

    Args:
        cfg (Config): The merged config.

    Returns:
        Runner: The runner; its loops are built lazily.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def debug_enabled() -> bool:
    """Whether ``MMBAKE_DEBUG`` asks for full tracebacks.

    Returns:
        bool: True unless the variable is unset, empty or ``0``.
    """
    return os.environ.get(DEBUG_ENV, '0') not in ('', '0')


@contextlib.contextmanager
def errors_as_one_line() -> Iterator[None]:
    """Report bad input raised inside as ``error: <message>``, status 2.

    Catches :data:`BUILD_ERRORS`; with ``MMBAKE_DEBUG=1`` they propagate
    with their traceback.
    """
    try:
        yield
    except BUILD_ERRORS as err:
        if debug_enabled():
            raise
        exit_with_error(err)


def say(line: str) -> None:
    """Print one line in a single write.

    Ranks share one terminal or pipe; ``print`` writes the text and the
    newline separately, so lines of several ranks could interleave.

    Args:
        line (str): The line, without its newline.
    """
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


def _flush_and_exit(status: int) -> NoReturn:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def exit_with_error(err: BaseException) -> NoReturn:
    """Report a configuration error as one line and exit with status 2.

    In a distributed run every rank fails alike; the process group is torn
    down and the process leaves through ``os._exit`` (see
    :func:`leave_distributed`).

    Args:
        err (BaseException): The error; a KeyError's message is its
            argument (``str()`` would quote it).
    """
    import torch.distributed as torch_dist

    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    print(f'error: {message}', file=sys.stderr, flush=True)
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
        _flush_and_exit(2)
    raise SystemExit(2)


def leave_distributed() -> NoReturn:
    """End a distributed process without gloo's occasional exit abort.

    About 1 in 40 two-process gloo runs (torch 2.14; 1 in 10 on 2.13) die
    with SIGABRT in interpreter teardown after the work is done; tearing the
    process group down and leaving through ``os._exit`` avoids that
    teardown. Prints ``Rank R/W finished.`` first.
    """
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        rank, world_size = torch_dist.get_rank(), torch_dist.get_world_size()
        torch_dist.destroy_process_group()
        say(f'Rank {rank}/{world_size} finished.')
    _flush_and_exit(0)
