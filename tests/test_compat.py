"""mmbake.compat: each fix works, stays narrow, and is applied once."""
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap

import mmengine.dist.utils as dist_utils
import mmengine.hooks.checkpoint_hook as checkpoint_hook
import mmengine.runner as mmengine_runner
import mmengine.runner.checkpoint as mmengine_checkpoint
import mmengine.runner.runner as runner_module
import numpy as np
import pytest
import torch
from mmengine.hooks import CheckpointHook
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import AmpOptimWrapper
from mmengine.optim.scheduler import CosineAnnealingLR
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader, save_checkpoint

from mmbake import compat
from mmbake.compat._common import PATCH_MARK
from mmbake.compat.resume_config import _drop_meta_config

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


def patched_functions() -> tuple:
    """Every function that mmbake.compat wraps, as mmengine exposes it."""
    return (dist_utils._init_dist_pytorch, MMDistributedDataParallel.__init__,
            mmengine_checkpoint.save_checkpoint,
            CheckpointHook._save_checkpoint_with_step,
            AmpOptimWrapper.__init__, Runner.load_checkpoint)


def test_apply_is_idempotent():
    before = patched_functions()
    first = compat.apply()
    assert compat.patch_cpu_dist_init()
    assert compat.patch_cpu_ddp_device_ids()
    assert compat.patch_atomic_checkpoints()
    assert compat.patch_cpu_amp_optim_wrapper()
    assert compat.patch_resume_config_exec()
    assert compat.apply() == first
    after = patched_functions()
    assert after == before
    # One wrapper around mmengine's own function, not a chain of them.
    for patched in after:
        assert getattr(patched, PATCH_MARK)
        assert not getattr(patched.__wrapped__, PATCH_MARK, False)
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


def test_checkpoints_and_pointer_are_written_atomically(tmp_path):
    # Every name under which mmengine calls save_checkpoint is the wrapper.
    assert getattr(mmengine_checkpoint.save_checkpoint, PATCH_MARK)
    assert runner_module.save_checkpoint is \
        mmengine_checkpoint.save_checkpoint
    assert mmengine_runner.save_checkpoint is \
        mmengine_checkpoint.save_checkpoint

    path = str(tmp_path / 'sub' / 'epoch_1.pth')
    mmengine_runner.save_checkpoint({'w': torch.arange(3)}, path)
    assert torch.equal(torch.load(path)['w'], torch.arange(3))
    # CheckpointHook writes the pointer with its module's open().
    pointer = str(tmp_path / 'last_checkpoint')
    with checkpoint_hook.open(pointer, 'w') as f:
        f.write(path)
    with checkpoint_hook.open(pointer) as f:
        assert f.read() == path
    assert sorted(os.listdir(tmp_path)) == ['last_checkpoint', 'sub']
    assert os.listdir(tmp_path / 'sub') == ['epoch_1.pth']


def test_checkpoint_detection(tmp_path):
    path = str(tmp_path / 'epoch_1.pth')
    save_checkpoint({'meta': {'epoch': 1}, 'w': torch.ones(1000)}, path)
    assert not compat.checkpoint_is_truncated(path)
    assert compat.load_checkpoint_weights_only(path)['meta'] == {'epoch': 1}
    with open(path, 'rb') as f:
        data = f.read()
    for size in (0, 10, len(data) // 2, len(data) - 1):
        cut = str(tmp_path / f'cut_{size}.pth')
        with open(cut, 'wb') as f:
            f.write(data[:size])
        assert compat.checkpoint_is_truncated(cut)
        with pytest.raises(ValueError, match='not a complete checkpoint'):
            compat.load_checkpoint_weights_only(cut)


@needs_weights_only_default
def test_load_checkpoint_weights_only_refuses_code(tmp_path):
    path = str(tmp_path / 'payload.pth')
    torch.save({'meta': {}, 'x': Payload()}, path)
    with pytest.raises(ValueError, match='refuses.*Unsupported global'):
        compat.load_checkpoint_weights_only(path)


def test_runner_drops_config_code_from_checkpoints(tmp_path):
    path = str(tmp_path / 'crafted.pth')
    marker = str(tmp_path / 'code_ran')
    torch.save(
        {
            'meta': {
                'epoch': 1,
                'iter': 1,
                'config': f'open({marker!r}, "w").close()\n'
            },
            'state_dict': {},
        }, path)
    assert getattr(Runner.load_checkpoint, PATCH_MARK)
    # The wrapper around a loader that returns the file as it is (a real
    # Runner.resume is in tests/test_reliability/test_checkpoint_safety.py).
    load = _drop_meta_config(lambda runner, filename: torch.load(filename))
    checkpoint = load(None, path)
    assert 'config' not in checkpoint['meta']
    assert checkpoint['meta']['epoch'] == 1
    assert not os.path.exists(marker)


needs_cpu_only = pytest.mark.skipif(
    not compat.cpu_only(), reason='checks the machine-without-GPU path')


@needs_cpu_only
def test_amp_optim_wrapper_autocasts_bfloat16_on_cpu():
    from mmpretrain.structures import DataSample

    from mmbake.models import BAKEHead

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        head = BAKEHead(num_classes=4, in_channels=8, global_ensemble=False)
    wrapper = AmpOptimWrapper(
        optimizer=torch.optim.SGD(head.parameters(), lr=0.1))
    assert wrapper.cast_dtype == torch.bfloat16
    assert not wrapper.loss_scaler.is_enabled()  # bf16 needs no scaling
    feats = (torch.randn(8, 8), )
    samples = [DataSample().set_gt_label(i // 2 % 4) for i in range(8)]
    before = head.fc.weight.detach().clone()
    with wrapper.optim_context(head):
        assert torch.get_autocast_dtype('cpu') == torch.bfloat16
        assert head(feats).dtype == torch.bfloat16
        losses = head.loss(feats, samples)
    # The ensembling and its KL ran in float32.
    assert losses['loss_bake'].dtype == torch.float32
    assert torch.isfinite(losses['loss_bake']) and losses['loss_bake'] > 0
    wrapper.update_params(losses['loss_ce'] + losses['loss_bake'])
    assert not torch.equal(head.fc.weight, before)
    # The state round-trips through a checkpoint and resume.
    state = wrapper.state_dict()
    AmpOptimWrapper(optimizer=torch.optim.SGD(head.parameters(),
                                              lr=0.1)).load_state_dict(state)


@needs_cpu_only
def test_amp_optim_wrapper_refuses_float16_on_cpu():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="dtype must be 'bfloat16'"):
        AmpOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            dtype='float16')


# Run in a fresh interpreter: imports mmbake under the environment given and
# reports what it changed in mmengine and what a load then does.
SWITCH_PROBE = textwrap.dedent('''
    import pickle, sys
    import torch
    import mmengine.dist.utils as dist_utils
    from mmengine.hooks import CheckpointHook
    from mmengine.model import MMDistributedDataParallel
    from mmengine.optim import AmpOptimWrapper
    from mmengine.runner import Runner
    import mmengine.runner.checkpoint as mmengine_checkpoint

    import mmbake
    from mmbake import compat
    from mmbake.compat._common import PATCH_MARK

    wrapped = [getattr(f, PATCH_MARK, False) for f in (
        dist_utils._init_dist_pytorch, MMDistributedDataParallel.__init__,
        mmengine_checkpoint.save_checkpoint,
        CheckpointHook._save_checkpoint_with_step, AmpOptimWrapper.__init__,
        Runner.load_checkpoint)]
    print('WRAPPED', sum(wrapped), 'OF', len(wrapped))
    print('APPLY', sorted(k for k, v in compat.apply().items() if v))
    path = sys.argv[1]
    # mmbake's own checker loads without touching the global allowlist...
    before = list(torch.serialization.get_safe_globals())
    compat.load_checkpoint_weights_only(path)
    print('ALLOWLIST_GREW', torch.serialization.get_safe_globals() != before)
    # ...and mmengine's loader (torch's weights-only default) does what
    # the installed libraries do.
    try:
        mmengine_checkpoint.CheckpointLoader.load_checkpoint(path)
        print('MMENGINE_LOAD ok')
    except pickle.UnpicklingError:
        print('MMENGINE_LOAD refused')
''')


def run_switch_probe(tmp_path, **env) -> subprocess.CompletedProcess:
    """Run :data:`SWITCH_PROBE` on a real training checkpoint."""
    path = str(tmp_path / 'epoch_1.pth')
    write_training_checkpoint(path)
    environ = {
        k: v
        for k, v in os.environ.items() if k not in ('MMBAKE_COMPAT', 'RANK')
    }
    environ.update(env)
    return subprocess.run([sys.executable, '-c', SWITCH_PROBE, path],
                          env=environ,
                          capture_output=True,
                          text=True,
                          timeout=120)


def log_lines(stdout: str) -> list:
    """The lines that mention mmbake's compatibility fixes."""
    return [line for line in stdout.splitlines() if 'mmbake: ' in line]


@needs_weights_only_default
def test_switch_off_leaves_mmengine_as_installed(tmp_path):
    result = run_switch_probe(tmp_path, MMBAKE_COMPAT='0')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'WRAPPED 0 OF 6' in result.stdout
    assert 'APPLY []' in result.stdout
    assert 'ALLOWLIST_GREW False' in result.stdout
    # torch's own refusal: the fix is really off.
    assert 'MMENGINE_LOAD refused' in result.stdout
    lines = log_lines(result.stdout)
    assert len(lines) == 1, result.stdout
    assert lines[0].endswith('mmbake: compatibility fixes off '
                             '(MMBAKE_COMPAT=0): mmengine runs as installed')


@needs_weights_only_default
def test_fixes_on_by_default_and_named_in_one_line(tmp_path):
    result = run_switch_probe(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'WRAPPED 6 OF 6' in result.stdout
    assert 'MMENGINE_LOAD ok' in result.stdout
    lines = log_lines(result.stdout)
    assert len(lines) == 1, result.stdout
    assert lines[0].endswith(
        'mmbake: compatibility fixes active: allowlist_checkpoint_globals, '
        'cpu_dist_init, cpu_ddp_device_ids, atomic_checkpoints, '
        'cpu_amp_optim_wrapper, resume_config_exec (set MMBAKE_COMPAT=0 to '
        'turn them off; see docs/compatibility.md)')
    # mmengine's logger, as every other line of a run.
    assert ' - mmengine - INFO - mmbake: ' in lines[0]


@needs_weights_only_default
def test_only_rank_0_logs_the_fixes(tmp_path):
    result = run_switch_probe(tmp_path, RANK='1')
    assert result.returncode == 0, result.stderr[-3000:]
    assert log_lines(result.stdout) == []


def test_switch_refuses_an_unknown_value(monkeypatch):
    monkeypatch.setenv('MMBAKE_COMPAT', 'maybe')
    with pytest.raises(
            ValueError, match="MMBAKE_COMPAT must be 1 .* or 0 .*'maybe'"):
        compat.enabled()
    # 0 and 1 are the one spelling; look-alikes are refused too.
    for value in ('off', 'False', 'true', '', ' 0'):
        monkeypatch.setenv('MMBAKE_COMPAT', value)
        with pytest.raises(ValueError, match='MMBAKE_COMPAT must be'):
            compat.enabled()
    monkeypatch.setenv('MMBAKE_COMPAT', '0')
    assert not compat.enabled()
    monkeypatch.setenv('MMBAKE_COMPAT', '1')
    assert compat.enabled()
    monkeypatch.delenv('MMBAKE_COMPAT')
    assert compat.enabled()
