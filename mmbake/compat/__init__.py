"""Narrow fixes for mmengine 0.10.x / mmpretrain 1.2.0 on today's torch.

:func:`apply` runs once when ``mmbake`` is imported (also through a config's
``custom_imports``). Each fix lives in its own small module of this package; each is skipped
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
4. :func:`patch_atomic_checkpoints` -- mmengine writes checkpoints and the
   ``last_checkpoint`` pointer straight onto their final names and deletes
   the outdated checkpoint before it saves the new one, so a kill while
   saving can leave a truncated file, or none at all, to resume from.
   Local files are now written through a temporary sibling and renamed into
   place, and outdated checkpoints are deleted after the new one is saved.
5. :func:`patch_cpu_amp_optim_wrapper` -- mmengine's ``AmpOptimWrapper``
   asserts a GPU; on a CPU-only machine it now trains with bfloat16
   autocast (no loss scaling needed).
6. :func:`patch_resume_config_exec` -- mmengine's ``Runner.resume``
   executes ``meta['config']`` of the checkpoint as a Python config;
   that entry is dropped (with a warning) when a checkpoint is loaded.

Fixes that pins already solve (``pkg_resources`` with setuptools < 81,
``np.in1d`` with numpy < 2.4) are deliberately not shimmed here.
"""
from typing import Callable, Dict, Tuple

from ._common import PATCH_MARK as _PATCH_MARK  # noqa: F401
from .atomic_checkpoints import patch_atomic_checkpoints, write_atomically
from .checkpoint_loading import (allowlist_checkpoint_globals,
                                 checkpoint_is_truncated,
                                 history_buffer_getattr,
                                 load_checkpoint_weights_only,
                                 weights_only_is_default)
from .cpu_amp import patch_cpu_amp_optim_wrapper
from .cpu_distributed import (cpu_module_with_device_ids, cpu_only,
                              patch_cpu_ddp_device_ids, patch_cpu_dist_init)
from .resume_config import (  # noqa: F401
    _drop_meta_config, patch_resume_config_exec)

__all__ = [
    'apply', 'allowlist_checkpoint_globals', 'checkpoint_is_truncated',
    'history_buffer_getattr', 'load_checkpoint_weights_only',
    'weights_only_is_default', 'cpu_only', 'cpu_module_with_device_ids',
    'patch_cpu_dist_init', 'patch_cpu_ddp_device_ids',
    'patch_atomic_checkpoints', 'write_atomically',
    'patch_cpu_amp_optim_wrapper', 'patch_resume_config_exec'
]

_applied: Dict[str, bool] = {}

_PATCHES: Tuple[Tuple[str, Callable[[], bool]], ...] = (
    ('allowlist_checkpoint_globals', allowlist_checkpoint_globals),
    ('cpu_dist_init', patch_cpu_dist_init),
    ('cpu_ddp_device_ids', patch_cpu_ddp_device_ids),
    ('atomic_checkpoints', patch_atomic_checkpoints),
    ('cpu_amp_optim_wrapper', patch_cpu_amp_optim_wrapper),
    ('resume_config_exec', patch_resume_config_exec),
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
