"""Global BAKE on 3 CPU processes through ``tools/dist_train.sh``.

203 real training images (not divisible by 3) and batches of 8 (4 anchors
+ 4 mates of ``ClassAwareBatchSampler``) over gloo, with the head's
``global_ensemble=True``, iteration-based (``InfiniteSampler``): training
finishes, no rank waits on another, and every rank reports the same
validation top-1. The same checks on 2 processes, epoch-based
(``DefaultSampler``), are those of the uninterrupted run of
``test_kill_resume.py``.
"""
import pytest

from .tool_runs import (RUN_TIMEOUT_S, check_global_bake_run, fresh_port,
                        train_command, write_config)

pytestmark = pytest.mark.dist

ITERS = 20


def test_global_bake_finishes_and_ranks_agree(tmp_path,
                                              fashion_mnist_small_root,
                                              run_tool, tool_env):
    config = write_config(
        str(tmp_path / 'bake_tiny.py'), fashion_mnist_small_root, 'iter',
        ITERS)
    # A hang (e.g. a rank short of a batch in the head's all_gather) fails
    # through run_tool's timeout, which kills every process of the run.
    result = run_tool(
        train_command(config, str(tmp_path / 'work'), 3),
        timeout=RUN_TIMEOUT_S,
        env=fresh_port(tool_env))
    check_global_bake_run(result, 3, 'iter', ITERS)
