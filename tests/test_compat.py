"""``import mmbake`` only registers; ``import mmbake.compat`` replaces two
named functions, and only those: both seen in one fresh interpreter by the
identity snapshot (``tests/identity_snapshot.py``), after importing every
module of torch, mmengine, mmpretrain and mmcv that ``import mmbake`` loads,
so that a replacement inside any of them would show."""
from mmbake.utils import cpu_model_wrapper_cfg
from tests.conftest import run_probe
from tests.identity_snapshot import report


def test_import_mmbake_replaces_nothing_and_the_opt_in_two_functions(
        mmbake_modules):
    found = report(
        run_probe('--preload', mmbake_modules, '--then',
                  'mmbake.compat').stdout)
    assert (found['replaced'], found['added'],
            found['allowlist_changed']) == ([], [], False)
    # Registered through mmengine's public CheckpointLoader.register_scheme:
    # the prefix of the weights that ship with the model zoo.
    assert found['schemes_added'] == ['mmbake://']
    # Then the opt-in, as a config's custom_imports would load it.
    replaced = [
        'mmengine.dist.utils._init_dist_pytorch', 'mmengine.model.'
        'wrappers.distributed.MMDistributedDataParallel.__init__'
    ]
    assert found['then'] == dict(
        replaced=replaced, added=[], allowlist_changed=False)


def test_cpu_model_wrapper_cfg():
    assert cpu_model_wrapper_cfg(None, True) == dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=True,
        device_ids=None)
    # The config's own wrapper keeps its settings.
    assert cpu_model_wrapper_cfg(dict(type='X', a=1, device_ids=[0])) == \
        dict(type='X', a=1, device_ids=None)
