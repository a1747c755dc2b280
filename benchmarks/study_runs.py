"""Helpers shared by the training studies (accuracy.py, equal_compute.py).

A study trains through the real runner, one ``tools/train.py`` subprocess
per run, on a snapshot of the code taken when it starts (other people keep
editing the working tree for the hour a study runs), and reads each run's
results back from mmengine's scalar log and final checkpoint.
"""
import argparse
import datetime
import hashlib
import json
import os
import os.path as osp
import platform
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from glob import glob
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# What a run executes (tools/train.py imports helpers from its own folder);
# copied once, so that edits to the working tree while the study runs cannot
# change later runs.
SNAPSHOT_PATHS = ('configs', 'mmbake', 'tools')


def _snapshot_files(root: str) -> List[str]:
    """The files of ``SNAPSHOT_PATHS`` under ``root``, relative, sorted."""
    files = []
    for rel in SNAPSHOT_PATHS:
        path = osp.join(root, rel)
        if osp.isfile(path):
            files.append(rel)
            continue
        for folder, dirs, names in os.walk(path):
            # .mim holds build-time copies (setup.py), not code that runs.
            dirs[:] = sorted(
                d for d in dirs if d not in ('__pycache__', '.mim'))
            files += [
                osp.relpath(osp.join(folder, n), root) for n in names
                if not n.endswith('.pyc')
            ]
    return sorted(files)


def code_digest(root: str) -> str:
    """A SHA-256 over the snapshot's file names and contents.

    Args:
        root (str): A folder holding ``SNAPSHOT_PATHS``.

    Returns:
        str: The hex digest.
    """
    digest = hashlib.sha256()
    for rel in _snapshot_files(root):
        digest.update(rel.encode())
        with open(osp.join(root, rel), 'rb') as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def changed_since_snapshot(snapshot: str) -> List[str]:
    """Files that differ between the snapshot and the repository now.

    Args:
        snapshot (str): The snapshot's root.

    Returns:
        list[str]: Relative paths added, removed or changed since.
    """
    old, new = set(_snapshot_files(snapshot)), set(_snapshot_files(REPO_ROOT))
    changed = sorted(old ^ new)
    for rel in sorted(old & new):
        with open(osp.join(snapshot, rel), 'rb') as a, open(
                osp.join(REPO_ROOT, rel), 'rb') as b:
            if a.read() != b.read():
                changed.append(rel)
    return changed


def take_snapshot(snapshot_dir: str) -> str:
    """Copy the code a run executes, once; reuse the copy when resuming.

    Args:
        snapshot_dir (str): Where the copy lives.

    Returns:
        str: ``snapshot_dir``, a root with ``configs/``, ``mmbake/`` and
        ``tools/``.
    """
    if osp.isdir(snapshot_dir):
        return snapshot_dir
    tmp = snapshot_dir + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    for rel in SNAPSHOT_PATHS:
        src, dst = osp.join(REPO_ROOT, rel), osp.join(tmp, rel)
        if osp.isfile(src):
            os.makedirs(osp.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
        else:
            shutil.copytree(
                src, dst, ignore=shutil.ignore_patterns('__pycache__', '.mim'))
    os.replace(tmp, snapshot_dir)
    return snapshot_dir


def git_state() -> Dict[str, object]:
    """The repository's commit and the snapshot paths changed from it.

    Returns:
        dict: ``commit`` (HEAD, or None outside a git clone) and
        ``uncommitted`` (paths under ``SNAPSHOT_PATHS`` that differ from
        HEAD, as ``git status --porcelain`` lists them).
    """
    try:
        commit = subprocess.run(
            ['git', 'rev-parse', 'HEAD'], cwd=REPO_ROOT, check=True,
            capture_output=True, text=True).stdout.strip()
        status = subprocess.run(
            ['git', 'status', '--porcelain', '--'] + list(SNAPSHOT_PATHS),
            cwd=REPO_ROOT, check=True, capture_output=True,
            text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {'commit': None, 'uncommitted': []}
    return {
        'commit': commit,
        'uncommitted': [line for line in status.splitlines() if line]
    }


def torch_version() -> str:
    """The installed torch version, without importing torch."""
    from importlib.metadata import version
    return version('torch')


def machine_info() -> Dict[str, object]:
    """CPU count, processor, platform, Python, torch and GPU of this host."""
    info = dict(
        cpus=os.cpu_count(),
        processor=platform.processor() or platform.machine(),
        platform=platform.platform(),
        python=platform.python_version(),
        torch=torch_version())
    try:
        import torch
        if torch.cuda.is_available():
            info['gpus'] = [
                torch.cuda.get_device_name(i)
                for i in range(torch.cuda.device_count())
            ]
    except ImportError:
        pass
    return info


def add_output_args(parser: argparse.ArgumentParser, name: str,
                    log_dir: str) -> None:
    """Add the options every study shares: where it reads and writes.

    Args:
        parser (ArgumentParser): The study's parser.
        name (str): The results' file stem, e.g.
            ``'accuracy_fashion_mnist'``.
        log_dir (str): Default folder of the runs' logs.
    """
    results_dir = osp.join(REPO_ROOT, 'benchmarks', 'results')
    parser.add_argument('--data-root',
                        default=osp.join(REPO_ROOT, 'data', 'fashion_mnist'))
    parser.add_argument('--results',
                        default=osp.join(results_dir, f'{name}.json'))
    parser.add_argument('--markdown', help='default: results path, .md')
    parser.add_argument('--plot', help='default: results path, .png')
    parser.add_argument(
        '--figure',
        default=osp.join(REPO_ROOT, 'docs', 'figures', f'{name}.png'),
        help='copy of the plot for the docs ("" for none)')
    parser.add_argument('--log-dir', default=log_dir)


def say_stamped(lock: threading.Lock, message: str) -> None:
    """Print ``[HH:MM:SS] message`` whole, though runs report in parallel."""
    stamp = time.strftime('%H:%M:%S')
    with lock:
        print(f'[{stamp}] {message}', flush=True)


def run_in_parallel(fn: Callable[..., object], pairs: Sequence[tuple],
                    jobs: int, say: Callable[[str], None]) -> List[str]:
    """Call ``fn(*pair)`` for every pair, ``jobs`` at a time.

    A failing call is reported through ``say``; the others go on.

    Args:
        fn (Callable): One run.
        pairs (Sequence[tuple]): Its arguments, one tuple per run.
        jobs (int): Runs at the same time.
        say (Callable[[str], None]): Prints a progress line.

    Returns:
        list[str]: The failures' messages (empty if every run worked).
    """
    failures = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(fn, *pair) for pair in pairs]
        for future in futures:
            try:
                future.result()
            except Exception as exc:  # noqa: B902 - keep the others going
                failures.append(str(exc))
                say(f'FAILED: {exc}')
    return failures


def utc_now() -> str:
    """The current time, e.g. ``'2026-11-26 01:45 UTC'``."""
    return datetime.datetime.now(
        datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')


def save_json(path: str, data: dict) -> None:
    """Write ``data`` atomically (a crash never leaves half a file).

    Args:
        path (str): The JSON file.
        data (dict): What to write.
    """
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1)
        f.write('\n')
    os.replace(tmp, path)


def scalars_path(work_dir: str) -> str:
    """The path of mmengine's ``vis_data/scalars.json`` in a work dir.

    Raises:
        RuntimeError: If the work dir holds none or several.
    """
    paths = glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    if len(paths) != 1:
        raise RuntimeError(f'expected one scalars.json in {work_dir}, found '
                           f'{paths}')
    return paths[0]


def read_scalars(work_dir: str) -> List[dict]:
    """The records of mmengine's ``vis_data/scalars.json`` of a work dir."""
    with open(scalars_path(work_dir), encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]


def checkpoint_meta(path: str) -> dict:
    """The ``meta`` of a checkpoint written by mmengine's runner.

    Args:
        path (str): A checkpoint that a run of the study just wrote (a
            trusted file: it is unpickled in full).

    Returns:
        dict: Its ``meta`` (``epoch``, ``iter``, ``cfg``, ``seed``, ...).
    """
    import torch

    ckpt = torch.load(path, map_location='cpu', weights_only=False)
    return ckpt['meta']


def run_training(cmd: Sequence[str],
                 code_root: str,
                 threads: int,
                 log_path: str,
                 timeout: Optional[float] = None) -> Tuple[float, float]:
    """Run one training command with the snapshot's code.

    Args:
        cmd (Sequence[str]): The ``tools/train.py`` command line.
        code_root (str): The snapshot, put first on ``PYTHONPATH`` (its
            ``mmbake`` wins over an installed one) and used as the working
            directory.
        threads (int): OpenMP / MKL threads of the run (torch's intra-op
            pool follows ``OMP_NUM_THREADS``).
        log_path (str): Where stdout and stderr go.
        timeout (float, optional): Seconds before the run is killed.

    Returns:
        tuple[float, float]: Wall-clock seconds of the subprocess, and the
        CPU seconds (user + system) it used: on a machine shared with other
        jobs the CPU time says what the run costs, the wall time also how
        busy the machine was.

    Raises:
        RuntimeError: If the run exits with an error or times out.
    """
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (code_root, env.get('PYTHONPATH')) if p)
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        env[var] = str(threads)
    os.makedirs(osp.dirname(osp.abspath(log_path)), exist_ok=True)
    start = time.perf_counter()
    with open(log_path, 'w', encoding='utf-8') as log:
        proc = subprocess.Popen(
            list(cmd), cwd=code_root, env=env, stdout=log,
            stderr=subprocess.STDOUT)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer is not None:
            timer.start()
        try:
            # wait4 instead of wait(): it also returns the child's resource
            # usage, i.e. its own CPU time even while other runs go on.
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if timer is not None:
                timer.cancel()
    # Reaped by wait4: tell Popen, so that it never waits for it again.
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        why = (f'killed after {timeout} s' if timed_out.is_set() else
               f'exit {proc.returncode}')
        raise RuntimeError(f'training failed ({why}); see {log_path}')
    return seconds, usage.ru_utime + usage.ru_stime
