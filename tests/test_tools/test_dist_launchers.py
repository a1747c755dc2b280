"""tools/dist_train.sh, tools/dist_test.sh and the Slurm launchers.

Two real CPU processes over gloo (through torchrun and the tools, which
start the gloo group themselves without GPU) train on real Fashion-MNIST
images and test the checkpoint; bad input to the shell launchers ends with
a message.
"""
import os.path as osp
import re

import pytest
import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

DIST_TRAIN = osp.join(REPO_ROOT, 'tools', 'dist_train.sh')
DIST_TEST = osp.join(REPO_ROOT, 'tools', 'dist_test.sh')
SLURM_TRAIN = osp.join(REPO_ROOT, 'tools', 'slurm_train.sh')
SLURM_TEST = osp.join(REPO_ROOT, 'tools', 'slurm_test.sh')
PLAIN_CONFIG = osp.join(REPO_ROOT, 'configs', 'fashion_mnist',
                        'resnet18_1xb64-vanilla_fashion-mnist.py')
# A hang must fail the test, not stall CI.
DIST_TIMEOUT_S = 300


@pytest.mark.dist
def test_two_process_train_then_test(tmp_path, run_tool, tiny_cfg_options):
    work_dir = str(tmp_path / 'work')
    # From a folder of its own, to see what the runs leave in it.
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    trained = run_tool([
        DIST_TRAIN, PLAIN_CONFIG, '2', '--work-dir', work_dir, '--cfg-options',
        *tiny_cfg_options
    ],
                       timeout=DIST_TIMEOUT_S,
                       cwd=str(cwd))
    assert trained.returncode == 0, trained.stderr[-3000:]
    out = trained.stdout + trained.stderr
    # Both ranks got to the end of tools/train.py.
    assert 'Rank 0/2 finished.' in out and 'Rank 1/2 finished.' in out
    if not torch.cuda.is_available():
        # The tools started gloo on both ranks (no GPU).
        assert out.count('backend "gloo" instead of "nccl"') == 2
    # 320 images / 2 ranks / batch 16 = 10 iterations per rank and epoch.
    assert 'Epoch(train) [1][10/10]' in out
    assert re.search(r'^Final top-1 \(val, epoch 1\): \d+\.\d\d$',
                     trained.stdout, re.MULTILINE)
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(checkpoint)

    tested = run_tool([
        DIST_TEST, PLAIN_CONFIG, checkpoint, '2', '--work-dir',
        str(tmp_path / 'test'), '--cfg-options', *tiny_cfg_options
    ],
                      timeout=DIST_TIMEOUT_S,
                      cwd=str(cwd))
    assert tested.returncode == 0, tested.stderr[-3000:]
    out = tested.stdout + tested.stderr
    assert 'Rank 0/2 finished.' in out and 'Rank 1/2 finished.' in out
    assert re.search(r'^Test top-1: \d+\.\d\d$', tested.stdout, re.MULTILINE)
    # The ranks gathered their results in the work dirs, and removed the
    # folder (mmengine's default leaves an empty .dist_test/ in the cwd).
    assert list(cwd.iterdir()) == []
    for folder in (work_dir, str(tmp_path / 'test')):
        assert not osp.exists(osp.join(folder, '.dist_test'))


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
