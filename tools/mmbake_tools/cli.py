"""The command line, the config, errors, checkpoint loading and exits."""
import argparse
import contextlib
import importlib.util
import logging
import os
import os.path as osp
import sys
import traceback
import zipfile
from typing import Iterator, List, Optional, Sequence

from mmengine.config import Config, DictAction

# For errors to name config keys: set by name_keys_of.
_config: dict = {}


def new_parser(description: str, checkpoint_help: Optional[str] = None):
    """A parser with a config, a checkpoint and ``--cfg-options``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config')
    if checkpoint_help is not None:
        parser.add_argument('checkpoint', help=checkpoint_help)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser


def parse_checked(parser, argv: Optional[List[str]]) -> argparse.Namespace:
    """Parse; a config or checkpoint that is not a file exits with 2."""
    args = parser.parse_args(argv)
    for what in ('config', 'checkpoint'):
        if not osp.isfile(getattr(args, what, None) or args.config):
            parser.error(f'{what} file not found: {getattr(args, what)}')
    return args


def apply_cfg_options(cfg: Config, args, loaders: Sequence[str] = ()):
    """Merge ``--cfg-options``, then :func:`name_keys_of`."""
    cfg.merge_from_dict(args.cfg_options or {})
    return name_keys_of(cfg, loaders)


def name_keys_of(cfg: Config, loaders: Sequence[str]) -> Config:
    """Let errors name keys of ``cfg``, ``loaders`` (the tool's) first."""
    _config.clear()
    _config.update((k, cfg[k]) for k in (*loaders, *cfg.keys()) if k in cfg)
    return cfg


def stock_tool(name: str) -> tuple:
    """mmpretrain's ``tools/<name>`` (in ``mmpretrain/.mim``, beside the
    ``mmpretrain::`` configs), its checked arguments, the config."""
    import mmpretrain

    path = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools', name)
    spec = importlib.util.spec_from_file_location('stock_' + name[:-3], path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = tool.parse_args()
    for what in ('config', 'checkpoint', 'resume'):
        path = getattr(args, what, None)
        if path not in (None, 'auto') and not osp.isfile(path):
            raise ValueError(f'{what} file not found: {path}')
    if args.launcher == 'pytorch' and 'RANK' not in os.environ:
        raise ValueError('--launcher pytorch needs the environment of '
                         f'torchrun: use tools/dist_{name[:-3]}.sh')
    return tool, args, Config.fromfile(args.config)


def new_runner(cfg: Config):
    """The runner, as mmpretrain's tools build it, after gloo_without_gpu."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from mmbake.utils.cpu_distributed import gloo_without_gpu

    gloo_without_gpu(cfg)
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)


@contextlib.contextmanager
def loading(runner, path: Optional[str]) -> Iterator[None]:
    """If ``path`` holds types beyond tensors (mmengine's CheckpointHook
    saves HistoryBuffers and numpy values; torch >= 2.6 loads weights-only),
    say so and allow a training checkpoint's types (``checkpoint_globals``)
    from the last ``before_run`` hook to ``after_load_checkpoint``."""
    import torch
    from mmengine.hooks import Hook

    from mmbake.utils import checkpoint_globals

    scope = contextlib.ExitStack()

    class AllowWhileLoading(Hook):

        def before_run(self, runner) -> None:
            scope.enter_context(checkpoint_globals())

        def after_load_checkpoint(self, runner, checkpoint) -> None:
            scope.close()

    # torch < 2.5 loads any type; its legacy format is not read statically.
    find = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint',
                   None)
    found = find and path and osp.isfile(path) and (
        find(path) if zipfile.is_zipfile(path) else ['(legacy format)'])
    if found:
        runner.logger.info(f'mmbake: {path} holds {", ".join(found)}: '
                           'loaded inside checkpoint_globals()')
        runner.register_hook(AllowWhileLoading(), 'LOWEST')
    with scope:
        yield


def users_mistake(err: BaseException) -> Optional[str]:
    """The message of an error in the user's input, else None: as mmengine
    builds an object from the config (led by its key), a registry miss,
    arguments a constructor does not take or refuses (ValueError), a
    dataset that cannot read its files; a ValueError of mmbake's code."""
    from mmengine.registry import build_from_cfg

    import mmbake

    frames = [frame for frame, _ in traceback.walk_tb(err.__traceback__)]
    codes = [frame.f_code for frame in frames]
    if build_from_cfg.__code__ in codes:
        at = len(codes) - codes[::-1].index(build_from_cfg.__code__)
        cfg, registry = map(frames[at - 1].f_locals.get, ('cfg', 'registry'))
        read = registry.name == 'dataset' and isinstance(
            err, (OSError, RuntimeError))
        if (read or isinstance(err, ValueError)
                or isinstance(err, KeyError) and at == len(codes)
                or isinstance(err, TypeError) and all(c.co_name == '__init__'
                                                      for c in codes[at:])):
            key = next(_keys_of(cfg, _config, ''), repr(cfg.get('type')))
            message = str(err.args[0] if isinstance(err, KeyError) else err)
            if read:
                message = (f'{message.rstrip(".")}. Prepare the dataset '
                           '(docs/get_started.md, section "Data"), or set '
                           f'its path with --cfg-options {key}.data_root=PATH')
            return f'{key}: {message}'
    own = (osp.dirname(mmbake.__file__), osp.dirname(osp.dirname(__file__)))
    if isinstance(err, ValueError) and osp.abspath(
            codes[-1].co_filename).startswith(own):
        return str(err)
    return None


def _keys_of(target: dict, node, prefix: str) -> Iterator[str]:
    """Dotted keys under ``node`` of dicts equal to ``target`` but for
    ``pipeline`` (tools build datasets with the test-time one)."""
    if isinstance(node, (list, tuple)):
        node = dict(enumerate(node))
    for key, value in node.items() if isinstance(node, dict) else ():
        if isinstance(value, dict) and dict(
                value, pipeline=0) == dict(
                    target, pipeline=0):
            yield f'{prefix}{key}'
        yield from _keys_of(target, value, f'{prefix}{key}.')


@contextlib.contextmanager
def errors_as_one_line() -> Iterator[None]:
    """End the tool with ``error: <message>``, exit status 2, on an error
    of the user's input (:func:`users_mistake`; unless ``MMBAKE_DEBUG=1``);
    any other keeps its traceback."""
    try:
        yield
    except Exception as err:  # noqa: B902 - re-raised unless the user's
        message = users_mistake(err)
        if message is None or os.environ.get('MMBAKE_DEBUG', '0') != '0':
            raise
        print(f'error: {message}', file=sys.stderr, flush=True)
        leave(2)


def say(line: str) -> None:
    """Print in one write, so that the lines of ranks stay whole."""
    sys.stdout.write(line + '\n')
    sys.stdout.flush()


def leave(status: int = 0) -> None:
    """End the tool, a process group first (``Rank R/W finished.``); about
    1 in 40 two-process gloo runs (torch 2.14) abort in interpreter
    teardown, so gloo's processes leave through ``os._exit``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank, size, backend = (dist.get_rank(), dist.get_world_size(),
                               dist.get_backend())
        dist.destroy_process_group()
        if status == 0:
            say(f'Rank {rank}/{size} finished.')
        if backend == 'gloo':
            logging.shutdown()
            sys.stderr.flush()
            os._exit(status)
    if status != 0:
        raise SystemExit(status)
