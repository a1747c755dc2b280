"""kill -9 in the middle of an epoch, then ``--resume``: same final weights;
then ``tools/dist_test.sh`` on the uninterrupted run's checkpoint.

Two processes (``tools/dist_train.sh``, gloo; one process killed while it
saves is in ``test_atomic_checkpoints.py``): a BAKE run is parked at
iteration 3 of epoch 2 (the pause hook of ``pause_hook.py``, only so that
the moment is deterministic) and every process of its session is killed
with SIGKILL. ``--resume`` then continues
from ``epoch_1.pth`` and must end with the weights of a run that was never
interrupted.

Reproducibility choices:

- ``randomness.seed=None`` in the config: the killed run draws a seed and
  stores it in its checkpoints; ``tools/train.py`` must reuse it on resume
  (mmengine 0.10.7 builds the sampler before restoring the seed). The
  uninterrupted reference gets that seed explicitly, so both runs shuffle,
  pick mates and initialise alike.
- ``deterministic=True`` on the CPU.
- The random transforms (``RandomCrop``, ``RandomFlip``) draw from numpy's
  global RNG in the process that loads data. With ``num_workers=0`` that
  is the main process, whose RNG state after a resume differs from the
  uninterrupted run's at the same step. With ``num_workers=1`` and
  ``persistent_workers=False``, every epoch starts a new worker that
  mmengine's ``worker_init_fn`` seeds from (seed, rank, worker id), so
  epoch 2 augments alike in both runs; the config's real pipeline stays.
"""
import os.path as osp
import re

import pytest

from .tool_runs import (DIST_TEST, PAUSE_ENV, PAUSE_MARKER, RUN_TIMEOUT_S,
                        assert_same_weights, check_global_bake_run, fresh_port,
                        kill_group, load_checkpoint, rank_results, read, start,
                        train_command, wait_for, write_config)

EPOCHS = 2
# Parked before this iteration (0-based) of the last epoch: mid-epoch.
PAUSE_ITER = 3


@pytest.mark.dist
def test_killed_run_resumes_to_the_same_weights(tmp_path,
                                                fashion_mnist_small_root,
                                                run_tool, tool_env):
    # Two ranks: the kill reaches torchrun, every rank and every dataloader
    # worker.
    nproc = 2
    config = write_config(
        str(tmp_path / 'bake_tiny.py'),
        fashion_mnist_small_root,
        length=EPOCHS,
        seed=None,
        deterministic=True,
        num_workers=1)
    killed_dir = str(tmp_path / 'killed')
    log = str(tmp_path / 'killed.log')

    # 1. Train until epoch 2 is under way, then kill -9 the whole session.
    env = dict(fresh_port(tool_env), **{PAUSE_ENV: f'iter:2:{PAUSE_ITER}'})
    proc = start(train_command(config, killed_dir, nproc), env, log)
    try:
        wait_for(
            lambda: PAUSE_MARKER in read(log) and osp.isfile(
                osp.join(killed_dir, 'epoch_1.pth')), proc, log)
    finally:
        kill_group(proc)
    assert proc.returncode != 0
    text = read(log)
    assert re.search(rf'Epoch\(train\) \[2\]\[\s*{PAUSE_ITER}/', text), \
        text[-3000:]
    assert not osp.exists(osp.join(killed_dir, 'epoch_2.pth'))
    seed = load_checkpoint(osp.join(killed_dir, 'epoch_1.pth'))['meta']['seed']

    # 2. Resume: from epoch_1.pth, with the checkpoint's seed.
    resumed = run_tool(
        train_command(config, killed_dir, nproc, '--resume'),
        timeout=RUN_TIMEOUT_S,
        env=fresh_port(tool_env))
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-4000:]
    assert 'resumed epoch: 1' in out
    assert f'Resuming with the seed of the checkpoint, {seed}' in out
    assert 'Epoch(train) [1]' not in out  # epoch 1 was not trained again
    assert osp.isfile(osp.join(killed_dir, f'epoch_{EPOCHS}.pth'))

    # 3. The uninterrupted run with the same seed ends with the same model.
    # It is also the two-rank, epoch-based global BAKE run of
    # tools/dist_train.sh, from a folder of its own to see what it leaves.
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    reference_dir = str(tmp_path / 'reference')
    reference = run_tool(
        train_command(config, reference_dir, nproc, '--cfg-options',
                      f'randomness.seed={seed}'),
        timeout=RUN_TIMEOUT_S,
        cwd=str(cwd),
        env=fresh_port(tool_env))
    check_global_bake_run(reference, nproc, 'epoch', EPOCHS)
    # The tools started gloo on both ranks (no GPU: conftest.py).
    assert (reference.stdout +
            reference.stderr).count('backend "gloo" instead of "nccl"') == 2
    assert re.search(rf'^Final top-1 \(val, epoch {EPOCHS}\): \d+\.\d\d$',
                     reference.stdout, re.MULTILINE)
    assert_same_weights(
        osp.join(reference_dir, f'epoch_{EPOCHS}.pth'),
        osp.join(killed_dir, f'epoch_{EPOCHS}.pth'))

    # 4. tools/dist_test.sh on two ranks tests the checkpoint; the ranks
    # gather their results in the work dirs and remove the folder
    # (mmengine's default leaves an empty .dist_test/ in the cwd).
    test_dir = str(tmp_path / 'test')
    tested = run_tool([
        DIST_TEST, config,
        osp.join(reference_dir, f'epoch_{EPOCHS}.pth'),
        str(nproc), '--work-dir', test_dir
    ],
                      timeout=RUN_TIMEOUT_S,
                      cwd=str(cwd),
                      env=fresh_port(tool_env))
    out = tested.stdout + tested.stderr
    assert tested.returncode == 0, out[-3000:]
    assert 'Rank 0/2 finished.' in out and 'Rank 1/2 finished.' in out
    assert re.search(r'^Test top-1: \d+\.\d\d$', tested.stdout, re.MULTILINE)
    assert list(cwd.iterdir()) == []
    for folder in (reference_dir, test_dir):
        assert not osp.exists(osp.join(folder, '.dist_test'))
    # Each rank keeps its own BatchNorm running statistics (mmengine wraps
    # DDP with broadcast_buffers=False) and only rank 0's are saved; a
    # resumed rank 1 starts from rank 0's, so the validation top-1 (every
    # rank evaluates its shard) may differ by an image between the two
    # runs. Within each run the ranks agree.
    results = rank_results(resumed.stdout)
    assert sorted(results) == [0, 1]
    assert len(set(results.values())) == 1, results
