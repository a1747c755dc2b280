"""Fixes 2 and 3: mmengine's pytorch launcher and DDP wrapper without CUDA."""
import functools
import logging
import os
from typing import Any, Callable, Optional, Sequence

import torch

from ._common import install


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

    # init_dist looks the function up in its module at call time.
    return install(dist_utils, '_init_dist_pytorch', _gloo_when_cpu_only)


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

    return install(MMDistributedDataParallel, '__init__', _drop_cpu_device_ids)
