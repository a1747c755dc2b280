"""mmbake.utils.checkpoint on mmengine's own checkpoint format (that of the
shared BAKE run's file, re-saved as mmengine saves it; SafeCheckpointHook's
format: tests/test_engine/test_hooks/), and the model zoo's loader."""
import glob
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub, MMLogger
from mmengine.runner.checkpoint import CheckpointLoader, save_checkpoint
from mmengine.utils import digit_version

from mmbake.utils import (checkpoint_globals, checkpoint_is_truncated,
                          history_buffer_getattr, load_checkpoint_weights_only)
from tests.script_utils import REPO_ROOT
from tests.test_engine.test_hooks.bake_run import bake_run

pytestmark = pytest.mark.skipif(
    digit_version(torch.__version__) < digit_version('2.6.0'),
    reason='torch < 2.6 does not load with weights_only=True by default')


class Payload:
    """A class no allowlist knows: its instances must never load."""


class GetattrPayload:
    """Pickles as ``getattr(numpy.ndarray, 'tofile')``, a file writer."""

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


def test_mmengine_format_loads_inside_the_block_only(tmp_path,
                                                     tmp_path_factory,
                                                     fashion_mnist_small_root):
    # The shared run's checkpoint as mmengine saves it: HistoryBuffers
    # (pickled with getattr of their statistics), numpy scalars and arrays
    # (a float32 one added for numpy's dtype classes).
    run = bake_run(tmp_path_factory, fashion_mnist_small_root)
    checkpoint = load_checkpoint_weights_only(run['epoch_1'])
    info = checkpoint['message_hub']['runtime_info']
    info['weights'] = np.ones(2, np.float32)
    mmengine_format = str(tmp_path / 'epoch_1.pth')
    save_checkpoint(checkpoint, mmengine_format)
    # Exactly how mmengine 0.10.7 loads for resume / load_from.
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        CheckpointLoader.load_checkpoint(mmengine_format, map_location='cpu')
    with torch.serialization.safe_globals([Payload]):
        allowlist = set(torch.serialization.get_safe_globals())
        with checkpoint_globals():
            loaded = CheckpointLoader.load_checkpoint(mmengine_format)
        # Left as it was, entries registered before the block included.
        assert set(torch.serialization.get_safe_globals()) == allowlist
    info = loaded['message_hub']['runtime_info']
    assert type(info['eta']) is np.float64
    assert info['weights'].dtype == np.float32
    hub = MessageHub.get_instance('test_checkpoint_resumed')
    hub.load_state_dict(loaded['message_hub'])  # HistoryBuffers only
    assert hub.get_scalar('train/loss').statistics('mean') > 0
    assert load_checkpoint_weights_only(mmengine_format)['meta']['epoch'] == 1


def test_an_exception_inside_the_block_restores_the_allowlist():
    allowlist = set(torch.serialization.get_safe_globals())
    with pytest.raises(KeyError, match='raised inside'):
        with checkpoint_globals():
            assert HistoryBuffer in torch.serialization.get_safe_globals()
            raise KeyError('raised inside')
    assert set(torch.serialization.get_safe_globals()) == allowlist


def test_code_is_refused_inside_the_block(tmp_path):
    payload, getter = str(tmp_path / 'a.pth'), str(tmp_path / 'b.pth')
    torch.save({'meta': {}, 'x': Payload()}, payload)
    torch.save({'x': GetattrPayload()}, getter)
    with checkpoint_globals():
        with pytest.raises(pickle.UnpicklingError, match='Payload'):
            torch.load(payload)
        with pytest.raises(pickle.UnpicklingError, match='tofile'):
            torch.load(getter)
    assert history_buffer_getattr(HistoryBuffer, 'mean') is HistoryBuffer.mean
    for obj, name in ((HistoryBuffer, '__init__'), (np.ndarray, 'min')):
        with pytest.raises(pickle.UnpicklingError):
            history_buffer_getattr(obj, name)


def test_truncated_checkpoints_are_detected(tmp_path):
    path = str(tmp_path / 'epoch_1.pth')
    save_checkpoint({'meta': {'epoch': 1}, 'w': torch.ones(1000)}, path)
    assert not checkpoint_is_truncated(path)
    with open(path, 'rb') as f:
        data = f.read()
    for size in (0, 10, len(data) // 2, len(data) - 1):
        cut = str(tmp_path / f'cut_{size}.pth')
        with open(cut, 'wb') as f:
            f.write(data[:size])
        assert checkpoint_is_truncated(cut)
        with pytest.raises(ValueError, match='not a complete checkpoint'):
            load_checkpoint_weights_only(cut)


def test_zoo_loader_logs_a_readable_backend_name(tmp_path):
    from mmbake.model_zoo import register_bake_models

    (released, ) = glob.glob(osp.join(REPO_ROOT, 'checkpoints', '*.pth'))
    url = 'mmbake://checkpoints/' + osp.basename(released)
    log = tmp_path / 'log.txt'
    MMLogger.get_instance(tmp_path.name, log_file=str(log))
    register_bake_models()
    assert 'state_dict' in CheckpointLoader.load_checkpoint(url)
    # mmengine names the backend after the loader function's name.
    assert f'Loads checkpoint by mmbake backend from path: {url}' in \
        log.read_text()
