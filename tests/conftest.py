"""Fixtures shared by the whole test suite: real Fashion-MNIST data roots and
a runner for the command-line tools.

The data comes from the Debian package ``dataset-fashion-mnist`` through
``tools/dataset_converters/prepare_fashion_mnist.py`` (or from an existing
``data/fashion_mnist``); tests that need it are skipped, with the reason,
where neither is present.
"""
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Sequence

import pytest

from tests.script_utils import load_script

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PREPARE_TOOL = osp.join(REPO_ROOT, 'tools', 'dataset_converters',
                        'prepare_fashion_mnist.py')
# Sizes of the small data root: enough for a few real training steps and a
# meaningful (if noisy) accuracy, small enough to load in milliseconds.
SMALL_TRAIN_IMAGES = 320
SMALL_TEST_IMAGES = 200


@pytest.fixture(scope='session')
def fashion_mnist_root(tmp_path_factory) -> str:
    """The full Fashion-MNIST data root (60,000 train / 10,000 test).

    Reuses the repository's ``data/fashion_mnist`` when complete, else
    builds one from the Debian package's files with the preparation tool.
    """
    tool = load_script(PREPARE_TOOL)
    repo_data = osp.join(REPO_ROOT, 'data', 'fashion_mnist')
    if not tool.find_problems(repo_data):
        return repo_data
    if not tool.debian_files_present():
        pytest.skip(
            f'Fashion-MNIST is not available: neither {repo_data} nor the '
            f'Debian package files in {tool.DEBIAN_DIR} exist (apt-get '
            'install dataset-fashion-mnist, or run '
            'tools/dataset_converters/prepare_fashion_mnist.py)')
    out_dir = str(tmp_path_factory.mktemp('fashion_mnist'))
    return tool.prepare_fashion_mnist(out_dir, source='debian')


def _write_idx_prefix(src: str, dst: str, num_items: int) -> None:
    """Copy the first ``num_items`` items of an IDX file, fixing the header.

    Bytes 4-8 of an IDX header hold the item count (big endian); images
    have a 16-byte header and 28 * 28 bytes each, labels 8 bytes and 1 each.
    """
    with open(src, 'rb') as f:
        magic = f.read(4)
        is_images = magic[3] == 3
        header_rest = f.read(12 if is_images else 4)
        body = f.read(num_items * (28 * 28 if is_images else 1))
    count = num_items.to_bytes(4, 'big')
    with open(dst, 'wb') as f:
        f.write(magic + count + header_rest[4:] + body)


@pytest.fixture(scope='session')
def fashion_mnist_small_root(fashion_mnist_root, tmp_path_factory) -> str:
    """A real but small data root: the first 320 train and 200 test images.

    mmpretrain's ``FashionMNIST`` reads the whole file set before any
    ``indices`` subset, so a truncated copy keeps each training run of the
    tool tests from spending seconds on loading 60,000 images.
    """
    out_dir = str(tmp_path_factory.mktemp('fashion_mnist_small'))
    for name, num_items in (
        ('train-images-idx3-ubyte', SMALL_TRAIN_IMAGES),
        ('train-labels-idx1-ubyte', SMALL_TRAIN_IMAGES),
        ('t10k-images-idx3-ubyte', SMALL_TEST_IMAGES),
        ('t10k-labels-idx1-ubyte', SMALL_TEST_IMAGES),
    ):
        _write_idx_prefix(
            osp.join(fashion_mnist_root, name), osp.join(out_dir, name),
            num_items)
    return out_dir


@pytest.fixture
def tiny_cfg_options(fashion_mnist_small_root) -> List[str]:
    """``--cfg-options`` that shrink the Fashion-MNIST configs to seconds.

    One epoch over the small data root, batch 16, no dataloader workers.
    """
    options = ['train_cfg.max_epochs=1', 'train_dataloader.batch_size=16']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [
            f'{loader}.dataset.data_root={fashion_mnist_small_root}',
            f'{loader}.num_workers=0',
            f'{loader}.persistent_workers=False',
        ]
    return options


@pytest.fixture(scope='session')
def mmbake_modules() -> str:
    """The modules of torch, mmengine, mmpretrain and mmcv that ``import
    mmbake`` loads, comma-separated, for ``tests/identity_snapshot.py
    --preload``."""
    from tests.identity_snapshot import report
    result = subprocess.run([sys.executable, '-m', 'tests.identity_snapshot'],
                            cwd=REPO_ROOT,
                            capture_output=True,
                            text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return ','.join(report(result.stdout)['watched_modules'])


def free_port() -> int:
    """Return a TCP port on localhost that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture
def tool_env() -> Dict[str, str]:
    """Environment for tool subprocesses: this interpreter, repo importable.

    ``PYTHON`` makes the shell launchers use the interpreter running the
    tests; ``PORT`` is a free port for torchrun's rendezvous.
    """
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (REPO_ROOT, env.get('PYTHONPATH')) if p)
    env['PYTHON'] = sys.executable
    env['PORT'] = str(free_port())
    # One compute thread per process: on two shared cores, OpenMP threads
    # that outnumber free cores spin at barriers and slow training tenfold.
    env.setdefault('OMP_NUM_THREADS', '1')
    return env


@pytest.fixture
def run_tool(tool_env) -> Callable[..., subprocess.CompletedProcess]:
    """Run a command line (a tool) as a subprocess with a hard timeout.

    Returns:
        Callable: ``run(cmd, timeout=300, cwd=None, env=None)`` returning the
        ``CompletedProcess`` with text ``stdout`` and ``stderr``; a command
        still running after ``timeout`` seconds fails the test.
    """

    def run(cmd: Sequence[str],
            timeout: float = 300,
            cwd: Optional[str] = None,
            env: Optional[Dict[str,
                               str]] = None) -> subprocess.CompletedProcess:
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
