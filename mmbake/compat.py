"""Narrow fixes for mmengine 0.10.x / mmpretrain 1.2.0 on today's torch.

:func:`apply` runs once when ``mmbake`` is imported (also through a config's
``custom_imports``). Each fix is one small function below; each is skipped
where the library already behaves, and each acts only in the situation that
would otherwise fail. ``docs/compatibility.md`` describes them for users.

1. :func:`allowlist_checkpoint_globals` -- torch >= 2.6 loads checkpoints
   with ``weights_only=True``; mmengine's training checkpoints hold a few
   plain-data types beyond tensors. They are added to torch's allowlist;
   the check itself stays on.
2. :func:`patch_cpu_dist_init` -- mmengine's pytorch launcher calls
   ``torch.cuda.set_device`` unconditionally; without CUDA it now starts a
   gloo process group instead.
3. :func:`patch_cpu_ddp_device_ids` -- mmengine's runner passes
   ``device_ids=[LOCAL_RANK]`` to DDP; for a model on the CPU that raises,
   so the argument is dropped in exactly that case.

Fixes that pins already solve (``pkg_resources`` with setuptools < 81,
``np.in1d`` with numpy < 2.4) are deliberately not shimmed here.
"""
import functools
import logging
import os
import pickle
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.utils import digit_version

# Marks a function installed by this module, so that apply() is idempotent.
_PATCH_MARK = '_mmbake_compat_patch'

# The statistics HistoryBuffer registers for itself (see
# HistoryBuffer._set_default_statistics); checkpoints reference them by name.
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')

_applied: Dict[str, bool] = {}


# ---------------------------------------------------------------------------
# 1. torch.load(weights_only=True) and mmengine training checkpoints
# ---------------------------------------------------------------------------
def weights_only_is_default(torch_version: Optional[str] = None) -> bool:
    """Whether ``torch.load`` defaults to ``weights_only=True``.

    Args:
        torch_version (str, optional): The version to judge; the installed
            torch's when None.

    Returns:
        bool: True from torch 2.6 on.
    """
    version = torch.__version__ if torch_version is None else torch_version
    return digit_version(version) >= digit_version('2.6.0')


def history_buffer_getattr(obj: Any, name: str) -> Callable:
    """A ``getattr`` that resolves only HistoryBuffer's statistics methods.

    Pickle protocol 2 (the one ``torch.save`` uses) stores a function
    defined in a class body, such as ``HistoryBuffer.mean``, as the call
    ``getattr(HistoryBuffer, 'mean')``. mmengine's ``HistoryBuffer`` pickles
    its table of such functions, so every training checkpoint contains these
    calls. Allowing the real ``getattr`` would open every attribute of every
    allowed class to a crafted file (``numpy.ndarray.tofile`` writes files),
    so this stand-in is registered under the name ``builtins.getattr``
    instead, for the weights-only unpickler only.

    Args:
        obj (Any): The object the checkpoint asks an attribute of.
        name (str): The attribute name.

    Returns:
        Callable: ``HistoryBuffer.<name>``.

    Raises:
        pickle.UnpicklingError: For any other object or name.
    """
    from mmengine.logging import HistoryBuffer

    if obj is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'mmbake: refusing getattr({obj!r}, {name!r}) in a weights-only '
        'load; only HistoryBuffer statistics methods '
        f'{_HISTORY_BUFFER_STATISTICS} are allowed')


def _numpy_safe_globals() -> List[Any]:
    """Numpy's array and scalar rebuild functions and numeric dtype classes.

    Returns:
        list: Entries for ``torch.serialization.add_safe_globals``; the
        rebuild functions under both module spellings (numpy 1 pickles write
        ``numpy.core.multiarray``, numpy 2 pickles ``numpy._core.multiarray``)
        so that checkpoints load across numpy major versions.
    """
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    entries: List[Any] = [np.ndarray, np.dtype]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries.append((reconstruct, f'{module}._reconstruct'))
        entries.append((scalar, f'{module}.scalar'))
    # Unpickling a dtype sets its state, which the weights-only unpickler
    # allows only for allowlisted classes; numpy >= 1.25 gives every dtype
    # its own class. Numbers and booleans only: no object or string dtypes.
    codes = np.typecodes['AllInteger'] + np.typecodes['AllFloat'] + '?'
    entries.extend({type(np.dtype(code)) for code in codes} - {np.dtype})
    return entries


def allowlist_checkpoint_globals() -> bool:
    """Let weights-only ``torch.load`` read mmengine training checkpoints.

    torch >= 2.6 defaults ``torch.load`` to ``weights_only=True``, and
    mmengine 0.10.7's checkpoint loader calls ``torch.load`` without that
    argument, so ``resume`` and ``load_from`` of a checkpoint written by the
    runner fail with ``UnpicklingError`` (``Unsupported global: GLOBAL
    mmengine.logging.history_buffer.HistoryBuffer``). The checkpoint's
    ``message_hub`` holds HistoryBuffers (numpy arrays inside, plus their
    statistics methods) and numpy scalars; ``meta``, ``optimizer`` and
    ``param_schedulers`` hold only tensors and builtins. Exactly those types
    are added to torch's allowlist; any other class in any file is still
    refused.

    Returns:
        bool: True if the allowlist was extended, False where not needed
        (torch < 2.6) or not possible (no ``add_safe_globals``).
    """
    serialization = torch.serialization
    if not (weights_only_is_default()
            and hasattr(serialization, 'add_safe_globals')):
        return False
    from mmengine.logging import HistoryBuffer

    serialization.add_safe_globals([
        HistoryBuffer,
        (history_buffer_getattr, 'builtins.getattr'),
        *_numpy_safe_globals(),
    ])
    return True


# ---------------------------------------------------------------------------
# 2. mmengine's pytorch launcher on a machine without CUDA
# ---------------------------------------------------------------------------
def cpu_only() -> bool:
    """Whether no accelerator that mmengine's launcher knows is present.

    Checked when a process group is started, not at import, so that
    importing mmbake never touches CUDA before a dataloader forks.

    Returns:
        bool: True without CUDA, NPU, MLU and MUSA devices.
    """
    import mmengine.device as device

    checks = ('is_cuda_available', 'is_npu_available', 'is_mlu_available',
              'is_musa_available')
    return not any(
        getattr(device, name)() for name in checks if hasattr(device, name))


def _gloo_when_cpu_only(original: Callable) -> Callable:
    """Wrap mmengine's ``_init_dist_pytorch`` to start gloo without CUDA."""

    @functools.wraps(original)
    def init_dist_pytorch(backend: str,
                          init_backend: str = 'torch',
                          **kwargs) -> None:
        if init_backend != 'torch' or not cpu_only():
            return original(backend, init_backend=init_backend, **kwargs)
        from mmengine.logging import print_log

        if backend != 'gloo':
            # Configs ask for nccl (mmpretrain's default runtime); nccl needs
            # CUDA, gloo runs the same collectives on the CPU.
            print_log(
                f'mmbake: no CUDA device, starting torch.distributed with '
                f'backend "gloo" instead of "{backend}"',
                logger='current',
                level=logging.INFO)
        torch.distributed.init_process_group(
            backend='gloo',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            **kwargs)

    setattr(init_dist_pytorch, _PATCH_MARK, True)
    return init_dist_pytorch


def patch_cpu_dist_init() -> bool:
    """Route mmengine's pytorch launcher to gloo when there is no CUDA.

    mmengine 0.10.7 ``mmengine/dist/utils.py::_init_dist_pytorch`` calls
    ``torch.cuda.set_device(local_rank)`` before ``init_process_group``,
    whatever the backend, so ``--launcher pytorch`` dies on a CPU-only
    machine ("Torch not compiled with CUDA enabled" or "no CUDA GPUs are
    available"). The wrapper keeps the original path whenever an accelerator
    exists and for deepspeed/colossalai initialisation.

    Returns:
        bool: True if the wrapper is installed (now or before).
    """
    import mmengine.dist.utils as dist_utils

    original = getattr(dist_utils, '_init_dist_pytorch', None)
    if original is None:
        return False
    if not getattr(original, _PATCH_MARK, False):
        # init_dist looks the function up in its module at call time.
        dist_utils._init_dist_pytorch = _gloo_when_cpu_only(original)
    return True


# ---------------------------------------------------------------------------
# 3. DDP device_ids for a model on the CPU
# ---------------------------------------------------------------------------
def cpu_module_with_device_ids(module: torch.nn.Module,
                               device_ids: Optional[Sequence[Any]]) -> bool:
    """Whether DDP would reject ``device_ids`` for this module.

    torch's ``DistributedDataParallel`` raises ``ValueError`` ("device_ids
    and output_device arguments only work with single-device/multiple-device
    GPU modules or CPU modules") when ``device_ids`` is given for a module
    whose parameters are on the CPU.

    Args:
        module (torch.nn.Module): The module to be wrapped.
        device_ids (Sequence, optional): The ``device_ids`` argument.

    Returns:
        bool: True if ``device_ids`` is non-empty and every parameter of
        ``module`` is on the CPU.
    """
    if not device_ids:
        return False
    devices = {p.device.type for p in module.parameters()}
    return devices == {'cpu'}


def _drop_cpu_device_ids(original: Callable) -> Callable:
    """Wrap ``MMDistributedDataParallel.__init__`` to drop CPU device_ids."""

    @functools.wraps(original)
    def __init__(self, module: torch.nn.Module, *args, **kwargs) -> None:
        if cpu_module_with_device_ids(module, kwargs.get('device_ids')):
            # For a CPU module DDP needs device_ids=None: it then runs on
            # the module's own device.
            kwargs['device_ids'] = None
        original(self, module, *args, **kwargs)

    setattr(__init__, _PATCH_MARK, True)
    return __init__


def patch_cpu_ddp_device_ids() -> bool:
    """Let mmengine's runner wrap a CPU model in MMDistributedDataParallel.

    mmengine 0.10.7 ``Runner.wrap_model`` always passes
    ``device_ids=[int(os.environ['LOCAL_RANK'])]``, which torch's DDP
    rejects for a model on the CPU (see :func:`cpu_module_with_device_ids`).
    Only that combination is changed; GPU models keep their device_ids.

    Returns:
        bool: True if the wrapper is installed (now or before).
    """
    from mmengine.model import MMDistributedDataParallel

    original = MMDistributedDataParallel.__init__
    if not getattr(original, _PATCH_MARK, False):
        MMDistributedDataParallel.__init__ = _drop_cpu_device_ids(original)
    return True


_PATCHES: Tuple[Tuple[str, Callable[[], bool]], ...] = (
    ('allowlist_checkpoint_globals', allowlist_checkpoint_globals),
    ('cpu_dist_init', patch_cpu_dist_init),
    ('cpu_ddp_device_ids', patch_cpu_ddp_device_ids),
)


def apply() -> Dict[str, bool]:
    """Apply every fix that the installed libraries need, once.

    Returns:
        dict[str, bool]: For each fix, whether it is active.
    """
    for name, patch in _PATCHES:
        if name not in _applied:
            _applied[name] = patch()
    return dict(_applied)


apply()
