"""Global BAKE on 2 and 3 CPU processes through ``tools/dist_train.sh``.

203 real training images (divisible by neither 2 nor 3) and batches of 8
(4 anchors + 4 mates of ``ClassAwareBatchSampler``) over gloo, with the
head's ``global_ensemble=True``: epoch-based (``DefaultSampler``) and
iteration-based (``InfiniteSampler``) training both finish, no rank waits
on another, and every rank reports the same validation top-1.
"""
import math
import re

import pytest

from .tool_runs import (BATCH_SIZE, NUM_TRAIN, NUM_VAL, RUN_TIMEOUT_S,
                        fresh_port, rank_results, train_command, write_config)

pytestmark = pytest.mark.dist

EPOCHS, ITERS = 2, 20


@pytest.mark.parametrize('loop', ['epoch', 'iter'])
@pytest.mark.parametrize('nproc', [2, 3])
def test_global_bake_finishes_and_ranks_agree(nproc, loop, tmp_path,
                                              fashion_mnist_small_root,
                                              run_tool, tool_env):
    length = EPOCHS if loop == 'epoch' else ITERS
    config = write_config(
        str(tmp_path / 'bake_tiny.py'), fashion_mnist_small_root, loop, length)
    # A hang (e.g. a rank short of a batch in the head's all_gather) fails
    # through run_tool's timeout, which kills every process of the run.
    result = run_tool(
        train_command(config, str(tmp_path / 'work'), nproc),
        timeout=RUN_TIMEOUT_S,
        env=fresh_port(tool_env))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    for rank in range(nproc):
        assert f'Rank {rank}/{nproc} finished.' in out

    # Every rank ran the whole schedule, with both loss terms finite.
    if loop == 'epoch':
        per_rank = math.ceil(math.ceil(NUM_TRAIN / nproc) / BATCH_SIZE)
        assert f'Epoch(train) [{EPOCHS}][{per_rank}/{per_rank}]' in out
    else:
        assert f'Iter(train) [{ITERS}/{ITERS}]' in out
    bake_losses = [float(v) for v in re.findall(r'loss_bake: (\S+)', out)]
    assert bake_losses and all(math.isfinite(v) for v in bake_losses)

    results = rank_results(result.stdout)
    assert sorted(results) == list(range(nproc)), result.stdout[-3000:]
    assert len(set(results.values())) == 1, results
    unit, step, world, top1 = results[0]
    assert (unit, step, world) == (loop, length, nproc)
    # Validation is over exactly the 100 images: the padding that makes the
    # shards equal is dropped, so top-1 is a whole percentage.
    assert NUM_VAL == 100 and top1 == round(top1)
