"""tools/gpu_check.sh where it cannot run: a clear refusal, nothing run."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tests.script_utils import REPO_ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason='a CUDA device is here')
def test_refuses_without_cuda(tmp_path):
    script = osp.join(REPO_ROOT, 'tools', 'gpu_check.sh')
    env = dict(PATH='/usr/bin:/bin', PYTHON=sys.executable)
    out = subprocess.run(
        ['bash', script, str(tmp_path / 'out')],
        env=env,
        capture_output=True,
        text=True,
        timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().endswith(
        f'gpu_check.sh: no CUDA device is visible to {sys.executable}')
    assert not (tmp_path / 'out' / 'gpu_tests.log').exists()
