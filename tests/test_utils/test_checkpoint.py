"""Weights-only loading of mmengine checkpoints (mmbake.utils.checkpoint)
and of the model zoo's (mmbake.model_zoo). SafeCheckpointHook's format on
a real run: tests/test_engine/test_hooks/test_safe_checkpoint_hook.py."""
import glob
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub, MMLogger
from mmengine.optim.scheduler import CosineAnnealingLR
from mmengine.runner.checkpoint import CheckpointLoader, save_checkpoint
from mmengine.utils import digit_version

from mmbake.utils import (checkpoint_globals, checkpoint_is_truncated,
                          history_buffer_getattr, load_checkpoint_weights_only)
from tests.script_utils import REPO_ROOT

pytestmark = pytest.mark.skipif(
    digit_version(torch.__version__) < digit_version('2.6.0'),
    reason='torch < 2.6 does not load with weights_only=True by default')


class Payload:
    """A class no allowlist knows: its instances must never load."""


class GetattrPayload:
    """Pickles as ``getattr(numpy.ndarray, 'tofile')``, a file writer."""

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


def write_training_checkpoint(path: str) -> None:
    """Save what mmengine's runner saves, built by mmengine itself."""
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler = CosineAnnealingLR(optimizer, T_max=10, by_epoch=False)
    hub = MessageHub.get_instance('test_checkpoint_saved')
    for loss in (2.3, 1.9, 1.7):
        hub.update_scalar('train/loss', loss)
    hub.update_scalar('val/accuracy/top1', 71.5)
    # runtime_info of a real run holds numpy scalars (the ETA) next to
    # builtins; arrays and other numeric dtypes cover the dtype classes.
    hub.update_info('eta', np.float64(12.5))
    hub.update_info('counts', np.arange(3, dtype=np.int64))
    hub.update_info('weights', np.ones(2, dtype=np.float32))
    save_checkpoint(
        dict(
            meta=dict(epoch=1, iter=3, seed=0, cfg='model = dict()'),
            state_dict=model.state_dict(),
            message_hub=hub.state_dict(),
            optimizer=optimizer.state_dict(),
            param_schedulers=[scheduler.state_dict()]), path)


def test_training_checkpoint_loads_inside_the_block_only(tmp_path):
    path = str(tmp_path / 'epoch_1.pth')
    write_training_checkpoint(path)
    # Exactly how mmengine 0.10.7 loads for resume / load_from.
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        CheckpointLoader.load_checkpoint(path, map_location='cpu')
    torch.serialization.add_safe_globals([Payload])
    try:
        allowlist = torch.serialization.get_safe_globals()
        with checkpoint_globals():
            loaded = CheckpointLoader.load_checkpoint(path, map_location='cpu')
        # Left as it was, entries registered before the block included.
        assert torch.serialization.get_safe_globals() == allowlist
    finally:
        torch.serialization.clear_safe_globals()

    loss = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer)
    assert loss.statistics('mean') == pytest.approx((2.3 + 1.9 + 1.7) / 3)
    info = loaded['message_hub']['runtime_info']
    assert info['eta'] == np.float64(12.5)
    assert info['counts'].tolist() == [0, 1, 2]
    assert info['weights'].dtype == np.float32
    assert loaded['param_schedulers'][0]['T_max'] == 10
    hub = MessageHub.get_instance('test_checkpoint_resumed')
    hub.load_state_dict(loaded['message_hub'])
    assert hub.get_scalar('val/accuracy/top1').current() == 71.5
    assert load_checkpoint_weights_only(path)['meta']['epoch'] == 1


def test_an_exception_inside_the_block_restores_the_allowlist():
    allowlist = torch.serialization.get_safe_globals()
    with pytest.raises(KeyError, match='raised inside'):
        with checkpoint_globals():
            assert HistoryBuffer in torch.serialization.get_safe_globals()
            raise KeyError('raised inside')
    assert torch.serialization.get_safe_globals() == allowlist


def test_code_is_refused_inside_the_block(tmp_path):
    payload, getter = str(tmp_path / 'a.pth'), str(tmp_path / 'b.pth')
    torch.save({'meta': {}, 'x': Payload()}, payload)
    torch.save({'x': GetattrPayload()}, getter)
    with checkpoint_globals():
        with pytest.raises(pickle.UnpicklingError, match='Payload'):
            torch.load(payload)
        with pytest.raises(pickle.UnpicklingError, match='tofile'):
            torch.load(getter)
    with pytest.raises(ValueError, match='refuses.*Unsupported global'):
        load_checkpoint_weights_only(payload)
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
