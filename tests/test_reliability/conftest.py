"""The reliability checks are CPU checks: their tool runs see no GPU
(several processes would share one over NCCL, and ``--amp`` would not take
the bfloat16 path)."""
import pytest


@pytest.fixture
def tool_env(tool_env) -> dict:
    """The shared tool environment with ``CUDA_VISIBLE_DEVICES=''``."""
    return dict(tool_env, CUDA_VISIBLE_DEVICES='')
