"""CPU ranks over gloo through ``tools/dist_train.sh`` and ``dist_test.sh``.

Two ranks (one process killed while it saves: test_atomic_checkpoints.py):
a BAKE run parked at iteration 3 of epoch 2 (pause_hook.py) gets SIGKILL in
every process; ``--resume`` alone continues from ``epoch_1.pth`` to the
weights of a run never interrupted, which dist_test.sh then tests; precise
BN (BatchSamplerPreciseBNHook) after each epoch, before the checkpoint is
saved. Three ranks: an iteration-based run.

Reproducibility as in test_train_test.py's ``stock`` run (one worker, not
persistent; ``deterministic=True``), with ``randomness.seed=None``: the
killed run draws a seed that ``tools/train.py`` reuses on resume (mmengine
0.10.7 builds the sampler before restoring it); the reference gets it.
"""
import os.path as osp
import re

import pytest

from .tool_runs import (DIST_TEST, PAUSE_ENV, PAUSE_MARKER,
                        assert_same_weights, check_global_bake_run, fresh_port,
                        kill_group, load_checkpoint, rank_results, read,
                        run_ranks, start, train_command, wait_for,
                        write_config)

pytestmark = pytest.mark.dist
EPOCHS, NPROC = 2, 2
PRECISE_BN = 'Finish Precise BN, BN stats updated.'
# Parked before this iteration (0-based) of the last epoch: mid-epoch.
PAUSE_ITER = 3


def test_killed_run_resumes_to_the_same_weights(tmp_path,
                                                fashion_mnist_small_root,
                                                run_tool, tool_env):
    # Two ranks: the kill reaches torchrun, every rank and every worker.
    # seed None: drawn by the killed run, reused on resume.
    spec = dict(length=EPOCHS, seed=None, deterministic=True, num_workers=1)
    config = write_config(f'{tmp_path}/c.py', fashion_mnist_small_root, **spec)
    killed, log = str(tmp_path / 'killed'), str(tmp_path / 'killed.log')
    last = f'epoch_{EPOCHS}.pth'

    # 1. Train until epoch 2 is under way, then kill -9 the whole session.
    env = dict(fresh_port(tool_env), **{PAUSE_ENV: f'iter:2:{PAUSE_ITER}'})
    proc = start(train_command(config, killed, NPROC), env, log)
    try:
        wait_for(
            lambda: PAUSE_MARKER in read(log) and osp.isfile(
                osp.join(killed, 'epoch_1.pth')), proc, log)
    finally:
        kill_group(proc)
    assert proc.returncode != 0 and not osp.exists(osp.join(killed, last))
    text = read(log)
    assert re.search(rf'Epoch\(train\) \[2\]\[\s*{PAUSE_ITER}/', text)
    # 16 images // (8 per batch x 2 ranks): one batch, before the save.
    assert text.index('run 1 iters...') < text.index(PRECISE_BN) < text.index(
        'Saving checkpoint at 1 epochs')
    seed = load_checkpoint(osp.join(killed, 'epoch_1.pth'))['meta']['seed']

    # 2. --resume alone: from epoch_1.pth, with the checkpoint's seed.
    resumed = run_ranks(run_tool, tool_env,
                        *train_command(config, killed, NPROC, '--resume'))
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-4000:]
    assert 'resumed epoch: 1' in out and 'Epoch(train) [1]' not in out
    assert f'Resuming with the seed of the checkpoint, {seed}' in out
    assert out.count(PRECISE_BN) == 1  # after epoch 2 only

    # 3. The uninterrupted run with that seed ends with the same model; it
    # is also the two-rank, epoch-based global BAKE run of dist_train.sh.
    reference = str(tmp_path / 'reference')
    ran = run_ranks(
        run_tool, tool_env,
        *train_command(config, reference, NPROC, '--cfg-options',
                       f'randomness.seed={seed}'))
    check_global_bake_run(ran, NPROC, 'epoch', EPOCHS)
    out = ran.stdout + ran.stderr
    # The tools started gloo on both ranks (no GPU: conftest.py).
    assert out.count('"gloo" instead of "nccl"') == 2
    assert re.search(rf'^Final top-1 \(val, epoch {EPOCHS}\): \d+\.\d\d$',
                     ran.stdout, re.MULTILINE)
    assert out.count(PRECISE_BN) == EPOCHS
    assert_same_weights(osp.join(reference, last), osp.join(killed, last))

    # 4. tools/dist_test.sh on two ranks tests the checkpoint.
    tested = run_ranks(run_tool, tool_env, DIST_TEST, config,
                       osp.join(reference, last), str(NPROC), '--work-dir',
                       str(tmp_path / 'test'))
    out = tested.stdout + tested.stderr
    assert tested.returncode == 0, out[-3000:]
    assert 'Rank 0/2 finished.' in out and 'Rank 1/2 finished.' in out
    assert re.search(r'^Test top-1: \d+\.\d\d$', tested.stdout, re.MULTILINE)
    # Each rank keeps its BatchNorm statistics (broadcast_buffers=False) and
    # a resumed rank 1 starts from rank 0's, but precise BN after the last
    # epoch gives every rank the average: both runs validate alike.
    results = rank_results(resumed.stdout)
    assert sorted(results) == [0, 1]
    assert set(results.values()) == set(rank_results(ran.stdout).values())


def test_three_ranks_iteration_based(tmp_path, fashion_mnist_small_root,
                                     run_tool, tool_env):
    """Global BAKE on 3 CPU processes, iteration-based (InfiniteSampler):
    203 training images (not divisible by 3), batches of 8 (4 anchors + 4
    mates): training finishes, no rank waits on another, the ranks agree."""
    config = write_config(
        str(tmp_path / 'bake_tiny.py'), fashion_mnist_small_root, 'iter', 20)
    result = run_ranks(run_tool, tool_env,
                       *train_command(config, str(tmp_path / 'work'), 3))
    check_global_bake_run(result, 3, 'iter', 20)
