"""Bad input to the launchers (tools/{dist,slurm}_{train,test}.sh): one
message, exit status 2, nothing launched. Their runs on two and three CPU
processes over gloo: ``tests/test_reliability/test_kill_resume.py`` and
``test_distributed.py``."""
import os.path as osp

import pytest

TOOLS = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools')
CONFIG = osp.join(
    osp.dirname(TOOLS), 'configs', 'fashion_mnist',
    'resnet18_1xb64-vanilla_fashion-mnist.py')
NO_SRUN = dict(PATH='/usr/bin:/bin')


# yapf: disable
@pytest.mark.parametrize('script,args,env,message', [
    ('dist_train', [], {}, 'usage:'),
    ('dist_train', [CONFIG], {}, 'usage:'),
    ('dist_train', ['nope.py', '2'], {}, 'config file not found: nope.py'),
    ('dist_train', [CONFIG, '0'], {}, 'GPUS must be a positive integer'),
    ('dist_train', [CONFIG, '-1'], {}, 'GPUS must be a positive integer'),
    ('dist_train', [CONFIG, '1'], dict(NNODES='x'),
     "NNODES must be a non-negative integer, got 'x'"),
    ('dist_test', [CONFIG, 'x.pth', '2'], {}, 'checkpoint file not found'),
    ('dist_test', [CONFIG, CONFIG, '0'], {}, 'GPUS must be a positive'),
    ('slurm_train', ['p', 'job'], {}, 'usage:'),
    ('slurm_test', ['p', 'job'], {}, 'usage:'),
    ('slurm_train', ['p', 'job', CONFIG, 'w'], dict(GPUS='0'),
     'GPUS must be a positive integer'),
    ('slurm_test', ['p', 'job', CONFIG, CONFIG], dict(GPUS='0'),
     'GPUS must be a positive integer'),
    # Without Slurm the message says what to use instead.
    ('slurm_train', ['p', 'job', CONFIG, 'w'], NO_SRUN,
     'srun not found: slurm_train.sh needs a Slurm cluster; use '
     'tools/dist_train.sh elsewhere'),
    ('slurm_test', ['p', 'job', CONFIG, CONFIG], NO_SRUN, 'srun not found'),
])
# yapf: enable
def test_bad_input_is_refused(script, args, env, message, run_tool, tool_env):
    if env is NO_SRUN and any(
            osp.exists(osp.join(d, 'srun')) for d in ('/usr/bin', '/bin')):
        pytest.skip('srun is installed here')
    result = run_tool([osp.join(TOOLS, f'{script}.sh'), *args],
                      timeout=60,
                      env=dict(tool_env, **env))
    assert result.returncode == 2
    assert message in result.stderr and 'Traceback' not in result.stderr
