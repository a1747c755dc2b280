"""The reliability checks are CPU checks: their tool runs see no GPU.

Overrides the shared ``tool_env`` fixture (so also ``run_tool``) for this
folder: with a GPU visible, several processes would share one device over
NCCL and the bfloat16 ``--amp`` path would not be taken.
"""
from typing import Dict

import pytest


@pytest.fixture
def tool_env(tool_env) -> Dict[str, str]:
    """The shared tool environment with ``CUDA_VISIBLE_DEVICES=''``."""
    return dict(tool_env, CUDA_VISIBLE_DEVICES='')
