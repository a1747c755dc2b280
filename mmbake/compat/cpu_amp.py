"""Fix 5: ``AmpOptimWrapper`` (``--amp``) on a machine without CUDA."""
import functools
from typing import Any, Callable

import torch

from ._common import install
from .cpu_distributed import cpu_only


def _bfloat16_on_cpu(original: Callable, amp_cls: type) -> Callable:
    """Wrap ``AmpOptimWrapper.__init__`` to accept a CPU-only machine."""

    @functools.wraps(original)
    def __init__(self,
                 loss_scale: Any = 'dynamic',
                 dtype: Any = None,
                 use_fsdp: bool = False,
                 **kwargs) -> None:
        if not cpu_only():
            return original(
                self,
                loss_scale=loss_scale,
                dtype=dtype,
                use_fsdp=use_fsdp,
                **kwargs)
        if dtype not in (None, 'bfloat16', torch.bfloat16):
            raise ValueError(
                'AmpOptimWrapper on a machine without GPU: dtype must be '
                "'bfloat16' (the only dtype of CPU autocast), but got "
                f'{dtype!r}.')
        # What AmpOptimWrapper.__init__ does after its device assertion.
        super(amp_cls, self).__init__(**kwargs)
        # bfloat16 has the exponent range of float32, so gradients need no
        # loss scaling: a disabled scaler passes losses and steps through
        # and keeps AmpOptimWrapper's backward/step/state_dict paths.
        self.loss_scaler = _disabled_grad_scaler()
        self._scale_update_param = None
        self.cast_dtype = torch.bfloat16

    return __init__


def _disabled_grad_scaler() -> Any:
    """A GradScaler that does nothing (its ``enabled=False`` mode)."""
    if hasattr(torch, 'amp') and hasattr(torch.amp, 'GradScaler'):
        return torch.amp.GradScaler('cpu', enabled=False)
    return torch.cuda.amp.GradScaler(enabled=False)


def patch_cpu_amp_optim_wrapper() -> bool:
    """Let ``--amp`` train on the CPU with bfloat16 autocast.

    mmengine 0.10.7 ``AmpOptimWrapper.__init__`` asserts that a CUDA, NPU,
    MLU or MUSA device exists (``AssertionError: ``AmpOptimizerWrapper`` is
    only available training on gpu, npu, mlu or musa``), although its
    autocast context (``mmengine.runner.amp.autocast``) supports the CPU
    with bfloat16. Without any such device, the wrapper now builds with
    ``dtype='bfloat16'`` (the default there; float16 raises a
    ``ValueError``) and a disabled loss scaler. With an accelerator,
    mmengine's code runs unchanged.

    Returns:
        bool: True if the wrapper is installed (now or before).
    """
    from mmengine.optim import AmpOptimWrapper

    return install(
        AmpOptimWrapper, '__init__',
        lambda original: _bfloat16_on_cpu(original, AmpOptimWrapper))
