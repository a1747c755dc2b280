"""mmbake.compat: each fix works, stays narrow, and is applied once."""
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap

import mmengine.dist.utils as dist_utils
import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.model import MMDistributedDataParallel
from mmengine.optim.scheduler import CosineAnnealingLR
from mmengine.runner.checkpoint import CheckpointLoader, save_checkpoint

from mmbake import compat

needs_weights_only_default = pytest.mark.skipif(
    not compat.weights_only_is_default(),
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
    hub = MessageHub.get_instance('test_compat_checkpoint')
    for loss in (2.3, 1.9, 1.7):
        hub.update_scalar('train/loss', loss)
    hub.update_scalar('val/accuracy/top1', 71.5)
    # runtime_info of a real run holds numpy scalars (the ETA) next to
    # builtins; arrays and other numeric dtypes cover the dtype classes.
    hub.update_info('eta', np.float64(12.5))
    hub.update_info('iter', 3)
    hub.update_info('counts', np.arange(3, dtype=np.int64))
    hub.update_info('weights', np.ones(2, dtype=np.float32))
    checkpoint = dict(
        meta=dict(epoch=1, iter=3, seed=0, cfg='model = dict()'),
        state_dict=model.state_dict(),
        message_hub=hub.state_dict(),
        optimizer=optimizer.state_dict(),
        param_schedulers=[scheduler.state_dict()])
    save_checkpoint(checkpoint, path)


def test_weights_only_is_default():
    assert not compat.weights_only_is_default('2.5.1')
    assert compat.weights_only_is_default('2.6.0')
    assert compat.weights_only_is_default('2.14.1')


@needs_weights_only_default
def test_training_checkpoint_loads_weights_only(tmp_path):
    path = str(tmp_path / 'epoch_1.pth')
    write_training_checkpoint(path)

    # Exactly how mmengine 0.10.7 loads for resume / load_from: torch.load
    # without weights_only, i.e. torch's weights-only default.
    loaded = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    loss = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer)
    assert loss.current() == pytest.approx(1.7)
    assert loss.statistics('mean') == pytest.approx((2.3 + 1.9 + 1.7) / 3)
    info = loaded['message_hub']['runtime_info']
    assert info['eta'] == np.float64(12.5)
    assert info['counts'].tolist() == [0, 1, 2]
    assert info['weights'].dtype == np.float32
    assert loaded['param_schedulers'][0]['T_max'] == 10
    assert 'momentum_buffer' in loaded['optimizer']['state'][0]

    # A resumed MessageHub takes the loaded state as the runner's would.
    hub = MessageHub.get_instance('test_compat_resumed')
    hub.load_state_dict(loaded['message_hub'])
    assert hub.get_scalar('val/accuracy/top1').current() == 71.5


@needs_weights_only_default
def test_unknown_classes_are_still_refused(tmp_path):
    path = str(tmp_path / 'payload.pth')
    torch.save({'state_dict': {}, 'extra': Payload()}, path)
    with pytest.raises(pickle.UnpicklingError, match='Payload'):
        torch.load(path)
    # The user's explicit weights_only=False is untouched.
    assert isinstance(torch.load(path, weights_only=False)['extra'], Payload)


@needs_weights_only_default
def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    path = str(tmp_path / 'getattr.pth')
    torch.save({'x': GetattrPayload()}, path)
    with pytest.raises(pickle.UnpicklingError, match='tofile'):
        torch.load(path)

    assert compat.history_buffer_getattr(HistoryBuffer,
                                         'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError):
        compat.history_buffer_getattr(HistoryBuffer, '__init__')
    with pytest.raises(pickle.UnpicklingError):
        compat.history_buffer_getattr(np.ndarray, 'min')


def test_apply_is_idempotent():
    before = (dist_utils._init_dist_pytorch,
              MMDistributedDataParallel.__init__)
    first = compat.apply()
    assert compat.patch_cpu_dist_init()
    assert compat.patch_cpu_ddp_device_ids()
    assert compat.apply() == first
    after = (dist_utils._init_dist_pytorch,
             MMDistributedDataParallel.__init__)
    assert after == before
    # One wrapper around mmengine's own function, not a chain of them.
    for patched in after:
        assert getattr(patched, compat._PATCH_MARK)
        assert not getattr(patched.__wrapped__, compat._PATCH_MARK, False)
    assert first['allowlist_checkpoint_globals'] == (
        compat.weights_only_is_default())


def test_cpu_module_with_device_ids():
    module = torch.nn.Linear(2, 2)
    assert compat.cpu_module_with_device_ids(module, [0])
    assert not compat.cpu_module_with_device_ids(module, None)
    assert not compat.cpu_module_with_device_ids(module, [])


@pytest.mark.gpu
def test_fixes_stay_off_with_cuda():
    if not torch.cuda.is_available():
        pytest.skip('needs a CUDA device')
    assert not compat.cpu_only()
    module = torch.nn.Linear(2, 2).cuda()
    assert not compat.cpu_module_with_device_ids(module, [0])


WORKER = textwrap.dedent('''
    import os
    import sys

    import torch
    import torch.distributed as dist
    import mmengine.dist.utils as dist_utils
    from mmengine.dist import init_dist
    from mmengine.model import MMDistributedDataParallel

    import mmbake  # noqa: F401  (applies mmbake.compat)

    rank = int(os.environ['RANK'])
    # What the fixes replace: mmengine's own code fails without CUDA.
    try:
        dist_utils._init_dist_pytorch.__wrapped__('gloo')
    except Exception as e:
        print(f'rank {rank}: unpatched init fails: {type(e).__name__}',
              flush=True)

    # The runner's call (mmpretrain's default runtime asks for nccl).
    init_dist('pytorch', backend='nccl')
    assert dist.get_backend() == 'gloo', dist.get_backend()

    try:
        MMDistributedDataParallel.__init__.__wrapped__(
            MMDistributedDataParallel.__new__(MMDistributedDataParallel),
            module=torch.nn.Linear(4, 2), device_ids=[0])
    except ValueError:
        print(f'rank {rank}: unpatched DDP refuses device_ids', flush=True)

    # The runner's DDP call, then one real gradient all-reduce.
    torch.manual_seed(0)
    model = MMDistributedDataParallel(
        module=torch.nn.Linear(4, 2),
        device_ids=[int(os.environ['LOCAL_RANK'])],
        broadcast_buffers=False)
    torch.manual_seed(100 + rank)  # different data on each rank
    model(torch.randn(8, 4)).square().mean().backward()
    grads = [torch.zeros_like(model.module.weight.grad) for _ in range(2)]
    dist.all_gather(grads, model.module.weight.grad)
    assert torch.equal(grads[0], grads[1])
    print(f'rank {rank}: ok', flush=True)

    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)
''')


@pytest.mark.dist
def test_mmengine_launcher_and_ddp_on_cpu(tmp_path):
    if not compat.cpu_only():
        pytest.skip('checks the CPU-only path')
    script = tmp_path / 'worker.py'
    script.write_text(WORKER)
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE='2',
            MASTER_ADDR='127.0.0.1',
            MASTER_PORT=str(port),
            OMP_NUM_THREADS='1')
        procs.append(
            subprocess.Popen([sys.executable, str(script)],
                             env=env,
                             stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE,
                             text=True,
                             start_new_session=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=120))
    except subprocess.TimeoutExpired:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail('the gloo workers did not finish in 120 s (hang?)')
    for rank, (proc, (stdout, stderr)) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, stderr[-3000:]
        assert f'rank {rank}: unpatched init fails' in stdout
        assert f'rank {rank}: unpatched DDP refuses device_ids' in stdout
        assert f'rank {rank}: ok' in stdout
