"""What ``tools/train.py`` and ``tools/test.py`` share: the work directory,
how errors are reported, how processes exit."""
import logging
import os
import os.path as osp
import sys
from typing import NoReturn, Optional

# Errors that building a runner from a bad config raises (a registry miss, a
# bad argument); the tools report them as one line instead of a traceback.
BUILD_ERRORS = (ValueError, KeyError, TypeError)
# Set to 1 to see the traceback of such an error.
DEBUG_ENV = 'MMBAKE_DEBUG'


def debug_enabled() -> bool:
    """Whether ``MMBAKE_DEBUG`` asks for full tracebacks.

    Returns:
        bool: True unless the variable is unset, empty or ``0``.
    """
    return os.environ.get(DEBUG_ENV, '0') not in ('', '0')


def set_work_dir(cfg, work_dir: Optional[str], config_path: str) -> None:
    """Set ``cfg.work_dir`` as mmpretrain's tools do.

    Priority: the command line, then the config, then
    ``./work_dirs/<config file name without extension>``.

    Args:
        cfg (mmengine.Config): The loaded config, updated in place.
        work_dir (str, optional): ``--work-dir`` from the command line.
        config_path (str): Path of the config file.
    """
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])


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
