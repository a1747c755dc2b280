"""Helpers for the reliability tests: tiny configs, runs that get killed
(started in a session of their own, killed with every descendant)."""
import contextlib
import math
import os
import os.path as osp
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from tests.dist_utils import free_port

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST = osp.join(REPO_ROOT, 'tools', 'test.py')
DIST_TRAIN = osp.join(REPO_ROOT, 'tools', 'dist_train.sh')
DIST_TEST = osp.join(REPO_ROOT, 'tools', 'dist_test.sh')
BAKE_CONFIG = osp.join(REPO_ROOT, 'configs', 'bake',
                       'resnet18_1xb64_fashion-mnist.py')
# Every wait is bounded: a hang fails the test, it never stalls CI.
RUN_TIMEOUT_S = 300
PAUSE_ENV, PAUSE_MARKER = 'MMBAKE_TEST_PAUSE', 'PAUSED'
# 203 = 7 x 29 training images: not divisible by 2 or 3 ranks, nor by the
# batch of 8 (4 anchors + 4 mates); 100 validation images.
NUM_TRAIN, NUM_VAL, BATCH_SIZE = 203, 100, 8
FINAL_RANK_LINE = re.compile(
    r'^Final top-1 \(val, (epoch|iter) (\d+), rank (\d+)/(\d+)\): '
    r'(\d+\.\d\d)$', re.MULTILINE)


def write_config(path: str,
                 data_root: str,
                 loop: str = 'epoch',
                 length: int = 2,
                 seed: Optional[int] = 0,
                 deterministic: bool = False,
                 num_workers: int = 0) -> str:
    """Write at ``path`` (returned) the BAKE Fashion-MNIST config (global
    ensembling) shrunk to ``length`` epochs or iterations over 203 images of
    ``data_root``, batch 8, one checkpoint kept, with the pause hook; by
    epoch, precise BN on 16 images after each (one batch per rank on 2)."""
    sampler = dict(epoch='DefaultSampler', iter='InfiniteSampler')[loop]
    loader = 'num_workers={}, persistent_workers=False, dataset=dict(' \
        f'data_root={data_root!r}, indices={{}})'
    text = f"""_base_ = [{BAKE_CONFIG!r}]
model = dict(head=dict(type='BAKEHead', global_ensemble=True))
train_dataloader = dict(batch_size={BATCH_SIZE}, sampler=dict(
    type={sampler!r}, shuffle=True), {loader.format(num_workers, NUM_TRAIN)})
val_dataloader = dict({loader.format(0, NUM_VAL)})
test_dataloader = val_dataloader
randomness = dict(seed={seed!r}, deterministic={deterministic})
custom_imports = dict(imports=['mmbake', 'tests.test_reliability.pause_hook'])
custom_hooks = [dict(type='ReliabilityPauseHook')]
log_processor = dict(by_epoch={loop == 'epoch'})
"""
    if loop == 'epoch':
        text += f"""custom_hooks = [dict(type='ReliabilityPauseHook'),
    dict(type='BatchSamplerPreciseBNHook', num_samples=16)]
train_cfg = dict(max_epochs={length},
    val_interval={length})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(
    interval=1, max_keep_ckpts=1))
"""
    else:
        text += f"""train_cfg = dict(_delete_=True, type='IterBasedTrainLoop',
    max_iters={length}, val_interval={length})
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False,
    begin=0, end=5)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(
    by_epoch=False, interval=10, max_keep_ckpts=1))
"""
    with open(path, 'w') as f:
        f.write(text)
    return path


def train_command(config: str, work_dir: str, nproc: int, *extra:
                  str) -> List[str]:
    """``tools/dist_train.sh`` on ``nproc`` processes."""
    return [DIST_TRAIN, config, str(nproc), '--work-dir', work_dir, *extra]


def fresh_port(env: Dict[str, str]) -> Dict[str, str]:
    """A copy of ``env`` with a new free rendezvous port for torchrun."""
    return dict(env, PORT=str(free_port()))


def run_ranks(run_tool, env: Dict[str, str], *cmd: str):
    """``run_tool(cmd)`` with a fresh port and :data:`RUN_TIMEOUT_S` (a hang,
    e.g. a rank short of a batch in an all_gather, kills every process)."""
    return run_tool(list(cmd), timeout=RUN_TIMEOUT_S, env=fresh_port(env))


def start(cmd: Sequence[str], env: Dict[str, str],
          log_path: str) -> subprocess.Popen:
    """Start a command in a new session, stdout and stderr to a file."""
    with open(log_path, 'w') as log:  # the child holds its own descriptor
        return subprocess.Popen(
            list(cmd),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True)


def read(path: str) -> str:
    """The text of a file, or '' while it does not exist."""
    return Path(path).read_text(errors='replace') if osp.isfile(path) else ''


def wait_for(condition: Callable[[], bool],
             proc: subprocess.Popen,
             log_path: str,
             timeout: float = RUN_TIMEOUT_S) -> None:
    """Poll ``condition``; fail, killing the run, if it ends or stalls."""
    deadline = time.monotonic() + timeout
    while not condition():
        ended = proc.poll() is not None
        if ended or time.monotonic() > deadline:
            kill_group(proc)
            raise AssertionError((f'the run ended (status {proc.returncode})'
                                  if ended else f'not there in {timeout} s') +
                                 f' before the awaited point; log tail:\n'
                                 f'{read(log_path)[-3000:]}')
        time.sleep(0.1)


def descendants(pid: int) -> List[int]:
    """Every live descendant of ``pid``, read from ``/proc``."""
    children: Dict[int, List[int]] = {}
    for entry in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{entry}/stat') as f:
                # The command name (field 2) may hold spaces; it ends at ')'.
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL every process of the run (torchrun starts each rank in a
    session of its own: every descendant, found before a killed parent's
    children are re-parented), then reap the leader."""
    for pid in [proc.pid] + descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):  # started meanwhile
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def rank_results(stdout: str) -> Dict[int, tuple]:
    """``{rank: (unit, step, world_size, top1)}`` from the final lines."""
    return {
        int(rank): (unit, int(step), int(world), float(top1))
        for unit, step, rank, world, top1 in FINAL_RANK_LINE.findall(stdout)
    }


def check_global_bake_run(result: subprocess.CompletedProcess, nproc: int,
                          loop: str, length: int) -> None:
    """Every rank of a finished run of :func:`write_config`'s config ran
    the whole schedule with a finite BAKE loss and reports the same top-1."""
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    for rank in range(nproc):
        assert f'Rank {rank}/{nproc} finished.' in out
    if loop == 'epoch':
        per_rank = math.ceil(math.ceil(NUM_TRAIN / nproc) / BATCH_SIZE)
        assert f'Epoch(train) [{length}][{per_rank}/{per_rank}]' in out
    else:
        assert f'Iter(train) [{length}/{length}]' in out
    bake_losses = [float(v) for v in re.findall(r'loss_bake: (\S+)', out)]
    assert bake_losses and all(math.isfinite(v) for v in bake_losses)
    results = rank_results(result.stdout)
    assert sorted(results) == list(range(nproc)), result.stdout[-3000:]
    assert len(set(results.values())) == 1, results
    unit, step, world, top1 = results[0]
    assert (unit, step, world) == (loop, length, nproc)
    # Validation is over exactly the 100 images: the padding that makes the
    # shards equal is dropped, so top-1 is a whole percentage.
    assert top1 == round(top1)


def load_checkpoint(path: str) -> dict:
    """Load a run's checkpoint the way mmbake does: weights only."""
    from mmbake.utils import load_checkpoint_weights_only
    return load_checkpoint_weights_only(path)


def assert_same_weights(path_a: str, path_b: str) -> None:
    """The two checkpoints hold the same model (within float tolerance)."""
    torch.testing.assert_close(
        load_checkpoint(path_a)['state_dict'],
        load_checkpoint(path_b)['state_dict'])
