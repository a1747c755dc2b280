"""Opt-in: mmengine's own pytorch launcher and DDP wrapping without GPU.

``import mmbake`` replaces nothing; mmbake's tools start distributed runs
without GPU through mmengine's extension points
(:mod:`mmbake.utils.cpu_distributed`). For mmengine's or mmpretrain's own
``tools/train.py --launcher pytorch`` on such a machine, a config lists
this module, where it can be seen::

    # mmengine's pytorch launcher and DDP without GPU (mmbake.compat
    # replaces two mmengine functions; see docs/compatibility.md).
    custom_imports = dict(imports=['mmbake', 'mmbake.compat'])

Where no GPU is present when they run, the replacements start gloo instead
of calling ``torch.cuda.set_device`` (``mmengine.dist.utils.
_init_dist_pytorch``) and give DDP of a CPU model ``device_ids=None``
(``MMDistributedDataParallel.__init__``); elsewhere mmengine's code runs.
"""
import functools
import logging

import mmengine.dist.utils as dist_utils
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel

from .utils import cpu_only, init_gloo_process_group


def _gloo_without_gpu(original):

    @functools.wraps(original)
    def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if init_backend != 'torch' or not cpu_only():
            return original(backend, init_backend=init_backend, **kwargs)
        init_gloo_process_group(backend, **kwargs)

    return _init_dist_pytorch


def _no_device_ids_on_cpu(original):

    @functools.wraps(original)
    def __init__(self, module, *args, **kwargs):
        if {p.device.type for p in module.parameters()} == {'cpu'}:
            kwargs['device_ids'] = None
        original(self, module, *args, **kwargs)

    return __init__


for _owner, _name, _wrap in ((dist_utils, '_init_dist_pytorch',
                              _gloo_without_gpu),
                             (MMDistributedDataParallel, '__init__',
                              _no_device_ids_on_cpu)):
    # A module is imported once: each is replaced once.
    setattr(_owner, _name, _wrap(getattr(_owner, _name)))
print_log(
    'mmbake.compat: replaced mmengine.dist.utils._init_dist_pytorch and '
    'MMDistributedDataParallel.__init__ (gloo and device_ids=None without '
    'GPU)',
    logger='current',
    level=logging.INFO)
