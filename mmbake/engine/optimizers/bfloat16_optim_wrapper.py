"""Mixed precision in bfloat16, also on a machine without GPU."""
import contextlib
from typing import Iterator

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class BFloat16OptimWrapper(OptimWrapper):
    """``OptimWrapper`` (same arguments) whose forward passes run under
    bfloat16 autocast on the device of the model's parameters.

    mmengine 0.10.7's ``AmpOptimWrapper`` asserts that a CUDA, NPU, MLU or
    MUSA device exists, although torch's CPU autocast runs in bfloat16;
    ``tools/train.py --amp`` picks this wrapper where there is none.
    bfloat16 has float32's exponent range: the loss needs no scaling, and
    backward, step and state are ``OptimWrapper``'s.
    """

    @contextlib.contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """``OptimWrapper``'s context with bfloat16 autocast inside."""
        param = next(model.parameters(), None)
        device = 'cpu' if param is None else param.device.type
        with super().optim_context(model), \
                torch.autocast(device_type=device, dtype=torch.bfloat16):
            yield
