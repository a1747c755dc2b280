"""Fixtures shared by the suite: real Fashion-MNIST data roots (from the
Debian package ``dataset-fashion-mnist`` or ``data/fashion_mnist``; tests
that need them are skipped, saying why, without either) and two runners for
the command-line tools (a subprocess, or in this process)."""
import contextlib
import fcntl
import os
import os.path as osp
import runpy
import signal
import subprocess
import sys
import traceback
import uuid
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest
import torch

from tests.dist_utils import free_port
from tests.script_utils import load_script

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# One compute thread per process, the test processes (pytest-xdist runs one
# per core) and the ones they start: OpenMP threads that outnumber the free
# cores spin at barriers and slow training several times over.
os.environ.setdefault('OMP_NUM_THREADS', '1')
torch.set_num_threads(1)
PREPARE_TOOL = osp.join(REPO_ROOT, 'tools', 'dataset_converters',
                        'prepare_fashion_mnist.py')
# The small data root: a few real training steps and a meaningful (if
# noisy) accuracy, loaded in milliseconds.
SMALL_TRAIN_IMAGES, SMALL_TEST_IMAGES = 320, 200


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """For pytest-xdist's ``--dist loadgroup`` (pytest.ini): a file's tests
    on one worker (its module fixtures built once); the multi-process tests
    (mark ``dist``) one after another on one worker, first: two gloo worlds
    at once on two cores make each other's ranks wait."""
    items.sort(key=lambda item: item.get_closest_marker('dist') is None)
    for item in items:
        group = 'dist' if item.get_closest_marker('dist') else \
            item.nodeid.split('::')[0]
        item.add_marker(pytest.mark.xdist_group(group))


@contextlib.contextmanager
def shared_by_workers(tmp_path_factory, name: str) -> Iterator[Path]:
    """``name`` in the folder this run's xdist workers share, locked."""
    folder = tmp_path_factory.getbasetemp()
    if 'PYTEST_XDIST_WORKER' in os.environ:
        folder = folder.parent
    with open(folder / f'{name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield folder / name


@pytest.fixture(scope='session')
def fashion_mnist_root(tmp_path_factory) -> str:
    """The full Fashion-MNIST data root (60,000 train / 10,000 test)."""
    tool = load_script(PREPARE_TOOL)
    repo_data = osp.join(REPO_ROOT, 'data', 'fashion_mnist')
    if not tool.find_problems(repo_data):
        return repo_data
    if not tool.debian_files_present():
        pytest.skip(
            f'Fashion-MNIST is not in {repo_data} nor {tool.DEBIAN_DIR}'
            ' (apt-get install dataset-fashion-mnist)')
    with shared_by_workers(tmp_path_factory, 'fashion_mnist') as out_dir:
        if tool.find_problems(str(out_dir)):
            tool.prepare_fashion_mnist(str(out_dir), source='debian')
        return str(out_dir)


@pytest.fixture(scope='session')
def fashion_mnist_small_root(fashion_mnist_root, tmp_path_factory) -> str:
    """A real but small data root: the first 320 train and 200 test images
    (mmpretrain's ``FashionMNIST`` reads the whole file set before any
    ``indices`` subset, so a short copy loads in milliseconds)."""
    out_dir = str(tmp_path_factory.mktemp('fashion_mnist_small'))
    for name, count in (('train', SMALL_TRAIN_IMAGES), ('t10k',
                                                        SMALL_TEST_IMAGES)):
        for kind, header, size in (('images-idx3', 16, 28 * 28),
                                   ('labels-idx1', 8, 1)):
            with open(
                    osp.join(fashion_mnist_root, f'{name}-{kind}-ubyte'),
                    'rb') as f:
                data = bytearray(f.read(header + count * size))
            data[4:8] = count.to_bytes(4, 'big')  # the IDX item count
            with open(osp.join(out_dir, f'{name}-{kind}-ubyte'), 'wb') as f:
                f.write(data)
    return out_dir


def tiny_options(data_root: str) -> List[str]:
    """``--cfg-options`` that shrink the Fashion-MNIST configs to seconds:
    one epoch over ``data_root``, batch 16, no dataloader workers."""
    options = ['train_cfg.max_epochs=1', 'train_dataloader.batch_size=16']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [
            f'{loader}.dataset.data_root={data_root}',
            f'{loader}.num_workers=0', f'{loader}.persistent_workers=False'
        ]
    return options


@pytest.fixture
def tiny_cfg_options(fashion_mnist_small_root) -> List[str]:
    """:func:`tiny_options` of the small data root."""
    return tiny_options(fashion_mnist_small_root)


def probe_environment() -> Dict[str, str]:
    """This interpreter's environment with the repository importable."""
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            p for p in (REPO_ROOT, os.environ.get('PYTHONPATH')) if p))


def run_probe(*args: str) -> subprocess.CompletedProcess:
    """``python -m tests.identity_snapshot ARGS``, which must succeed."""
    result = subprocess.run(
        [sys.executable, '-m', 'tests.identity_snapshot', *args],
        cwd=REPO_ROOT,
        env=probe_environment(),
        capture_output=True,
        text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope='session')
def mmbake_modules(tmp_path_factory) -> str:
    """The modules of torch, mmengine, mmpretrain and mmcv that ``import
    mmbake`` loads, comma-separated, for ``tests/identity_snapshot.py
    --preload``; found once per test run, in a fresh interpreter."""
    from tests.identity_snapshot import report
    with shared_by_workers(tmp_path_factory, 'mmbake_modules.txt') as path:
        if not path.exists():
            path.write_text(','.join(
                report(run_probe().stdout)['watched_modules']))
        return path.read_text()


@pytest.fixture
def tool_env() -> Dict[str, str]:
    """:func:`probe_environment`, ``PYTHON`` (for the launchers) this
    interpreter and a free ``PORT``."""
    return dict(
        probe_environment(), PYTHON=sys.executable, PORT=str(free_port()))


Run = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def run_tool(tool_env) -> Run:
    """``run(cmd, timeout=300, cwd=None, env=None)``: the command's
    ``CompletedProcess`` (text); past ``timeout`` seconds the test fails."""

    def run(cmd, timeout=300, cwd=None, env=None):
        # A session of its own, so that a timeout also ends the workers
        # that torchrun started, not only torchrun.
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd or REPO_ROOT,
            env=env or tool_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(f'{" ".join(cmd)} did not finish in {timeout} s '
                        f'(hang?); last output:\n{stdout[-2000:]}\n'
                        f'{stderr[-2000:]}')
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout,
                                           stderr)

    return run


# Tools whose main() builds an mmengine Runner: in one process, each run
# needs an experiment name of its own, or mmengine hands the second run the
# first one's logger and visualizer (instances are looked up by that name).
RUNNER_TOOLS = ('train.py', 'test.py', 'visualize_soft_targets.py',
                'calibrate.py')


@pytest.fixture
def call_tool(run_tool, capfd) -> Run:
    """:func:`run_tool` for ``[sys.executable, SCRIPT, *ARGS]``, in this
    process as the interpreter would run it (``__main__``, ``sys.argv``,
    its folder first on ``sys.path``), without a start-up (about 4 s): a
    ``SystemExit`` gives the return code, another exception its traceback
    on stderr and 1, warnings are appended to stderr; ``timeout`` applies
    to subprocesses only: where CUDA is visible (an environment can hide
    the GPU)."""

    def call(cmd, timeout=300, cwd=None, env=None):
        if cmd[0] != sys.executable or env is not None or cwd is not None:
            raise ValueError('call_tool runs [sys.executable, SCRIPT, ...] '
                             'in this process, without env or cwd; use '
                             'run_tool for anything else')
        if torch.cuda.is_available():
            return run_tool(cmd, timeout=timeout)
        script, argv = cmd[1], list(cmd[2:])
        if osp.basename(script) in RUNNER_TOOLS:
            argv += ['--cfg-options', f'experiment_name=t{uuid.uuid4().hex}']
        saved = dict(os.environ), list(sys.path), sys.argv
        sys.argv = [script, *argv]
        sys.path.insert(0, osp.dirname(osp.abspath(script)))
        capfd.readouterr()
        code = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            try:
                runpy.run_path(script, run_name='__main__')
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else \
                    int(exc.code is not None)
            except Exception:  # noqa: B902 - a crash, as a process shows it
                traceback.print_exc()
                code = 1
            finally:
                os.environ.clear()
                os.environ.update(saved[0])
                sys.path[:], sys.argv = saved[1], saved[2]
        out, err = capfd.readouterr()
        err += ''.join(
            warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
            for w in caught)
        return subprocess.CompletedProcess(list(cmd), code, out, err)

    return call
