"""Bad input to tools/dist_train.sh, tools/dist_test.sh and the Slurm
launchers ends with a message and exit status 2.

Their runs on two and three CPU processes over gloo (torchrun and the
tools, which start the gloo group themselves without GPU):
``tests/test_reliability/test_kill_resume.py`` (train, kill, resume and
test on two ranks) and ``test_distributed.py`` (three ranks).
"""
import os.path as osp

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

DIST_TRAIN = osp.join(REPO_ROOT, 'tools', 'dist_train.sh')
DIST_TEST = osp.join(REPO_ROOT, 'tools', 'dist_test.sh')
SLURM_TRAIN = osp.join(REPO_ROOT, 'tools', 'slurm_train.sh')
SLURM_TEST = osp.join(REPO_ROOT, 'tools', 'slurm_test.sh')
PLAIN_CONFIG = osp.join(REPO_ROOT, 'configs', 'fashion_mnist',
                        'resnet18_1xb64-vanilla_fashion-mnist.py')
# A hang must fail the test, not stall CI.
DIST_TIMEOUT_S = 300


@pytest.mark.parametrize('args,message', [
    ([], 'usage:'),
    ([PLAIN_CONFIG], 'usage:'),
    (['missing_config.py', '2'], 'config file not found: missing_config.py'),
    ([PLAIN_CONFIG, '0'], 'GPUS must be a positive integer'),
    ([PLAIN_CONFIG, 'two'], 'GPUS must be a positive integer'),
    ([PLAIN_CONFIG, '-1'], 'GPUS must be a positive integer'),
])
def test_dist_train_bad_input(args, message, run_tool):
    result = run_tool([DIST_TRAIN, *args], timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert 'Traceback' not in result.stderr


def test_dist_train_bad_environment(run_tool, tool_env):
    env = dict(tool_env, NNODES='x')
    result = run_tool([DIST_TRAIN, PLAIN_CONFIG, '1'], timeout=60, env=env)
    assert result.returncode == 2
    assert "NNODES must be a non-negative integer, got 'x'" in result.stderr


def test_dist_test_bad_input(tmp_path, run_tool):
    missing = str(tmp_path / 'missing.pth')
    result = run_tool([DIST_TEST, PLAIN_CONFIG, missing, '2'], timeout=60)
    assert result.returncode == 2
    assert f'checkpoint file not found: {missing}' in result.stderr

    result = run_tool([DIST_TEST, PLAIN_CONFIG, PLAIN_CONFIG, '0'], timeout=60)
    assert result.returncode == 2
    assert 'GPUS must be a positive integer' in result.stderr


@pytest.mark.parametrize('script', [SLURM_TRAIN, SLURM_TEST])
def test_slurm_launchers_bad_input(script, tmp_path, run_tool, tool_env):
    result = run_tool([script, 'partition', 'job'], timeout=60)
    assert result.returncode == 2
    assert 'usage:' in result.stderr

    last = str(tmp_path / 'work') if script == SLURM_TRAIN else PLAIN_CONFIG
    result = run_tool([script, 'partition', 'job', PLAIN_CONFIG, last],
                      timeout=60,
                      env=dict(tool_env, GPUS='0'))
    assert result.returncode == 2
    assert 'GPUS must be a positive integer' in result.stderr

    # Without Slurm (no srun on PATH) the message says what to use instead.
    no_slurm = dict(tool_env, PATH='/usr/bin:/bin')
    if osp.exists('/usr/bin/srun') or osp.exists('/bin/srun'):
        pytest.skip('srun is installed here')
    result = run_tool([script, 'partition', 'job', PLAIN_CONFIG, last],
                      timeout=60,
                      env=no_slurm)
    assert result.returncode == 2
    assert 'srun not found' in result.stderr
