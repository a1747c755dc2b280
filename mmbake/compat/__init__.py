"""Narrow fixes for mmengine 0.10.x / mmpretrain 1.2.0 on today's torch.

:func:`apply` runs once when ``mmbake`` is imported (also through a config's
``custom_imports``) and logs one line naming the fixes it made active.
``MMBAKE_COMPAT=0`` in the environment turns every fix off: mmengine then
runs exactly as installed. Each fix lives in its own small module of this
package, is skipped where the library does not have the code it fixes, and
acts only in the situation that would otherwise fail.
``docs/compatibility.md`` describes them for users.

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
import logging
import multiprocessing
import os
from typing import Callable, Dict, Tuple

from .atomic_checkpoints import patch_atomic_checkpoints
from .checkpoint_loading import (allowlist_checkpoint_globals,
                                 checkpoint_is_truncated,
                                 checkpoint_safe_globals,
                                 history_buffer_getattr,
                                 load_checkpoint_weights_only,
                                 weights_only_is_default)
from .cpu_amp import patch_cpu_amp_optim_wrapper
from .cpu_distributed import (cpu_module_with_device_ids, cpu_only,
                              patch_cpu_ddp_device_ids, patch_cpu_dist_init)
from .resume_config import patch_resume_config_exec

__all__ = [
    'SWITCH_ENV', 'apply', 'enabled', 'summary',
    'allowlist_checkpoint_globals', 'checkpoint_is_truncated',
    'checkpoint_safe_globals', 'history_buffer_getattr',
    'load_checkpoint_weights_only', 'weights_only_is_default', 'cpu_only',
    'cpu_module_with_device_ids', 'patch_cpu_dist_init',
    'patch_cpu_ddp_device_ids', 'patch_atomic_checkpoints',
    'patch_cpu_amp_optim_wrapper', 'patch_resume_config_exec'
]

# The one switch: MMBAKE_COMPAT=0 leaves mmengine as it is installed.
SWITCH_ENV = 'MMBAKE_COMPAT'

_applied: Dict[str, bool] = {}

_PATCHES: Tuple[Tuple[str, Callable[[], bool]], ...] = (
    ('allowlist_checkpoint_globals', allowlist_checkpoint_globals),
    ('cpu_dist_init', patch_cpu_dist_init),
    ('cpu_ddp_device_ids', patch_cpu_ddp_device_ids),
    ('atomic_checkpoints', patch_atomic_checkpoints),
    ('cpu_amp_optim_wrapper', patch_cpu_amp_optim_wrapper),
    ('resume_config_exec', patch_resume_config_exec),
)


def enabled() -> bool:
    """Whether the environment lets mmbake apply its fixes.

    Returns:
        bool: False when ``MMBAKE_COMPAT`` is ``0``; True when it is ``1``
        or unset.

    Raises:
        ValueError: For any other value, so that a typo does not silently
            pick a side.
    """
    value = os.environ.get(SWITCH_ENV, '1')
    if value not in ('0', '1'):
        raise ValueError(
            f'{SWITCH_ENV} must be 1 (compatibility fixes on, the default) '
            f'or 0 (off), but got {value!r}.')
    return value == '1'


def apply() -> Dict[str, bool]:
    """Apply every fix that the installed libraries need, once.

    Nothing is changed when :func:`enabled` is False.

    Returns:
        dict[str, bool]: For each fix, whether it is active.
    """
    if enabled():
        for name, patch in _PATCHES:
            if name not in _applied:
                _applied[name] = patch()
    return {name: _applied.get(name, False) for name, _ in _PATCHES}


def summary(active: Dict[str, bool]) -> str:
    """The line that tells a user what mmbake changed in mmengine.

    Args:
        active (dict[str, bool]): What :func:`apply` returned.

    Returns:
        str: One line naming the active fixes and the switch.
    """
    names = [name for name, on in active.items() if on]
    if not enabled():
        return (f'mmbake: compatibility fixes off ({SWITCH_ENV}=0): mmengine '
                'runs as installed')
    if not names:
        return 'mmbake: no compatibility fix applies to this mmengine'
    return (f'mmbake: compatibility fixes active: {", ".join(names)} (set '
            f'{SWITCH_ENV}=0 to turn them off; see docs/compatibility.md)')


def _log_once(active: Dict[str, bool]) -> None:
    """Log :func:`summary` once per job.

    Only the main process of rank 0: under torchrun every rank imports
    mmbake, and so does every dataloader worker started with ``spawn``.
    """
    if os.environ.get('RANK', '0') != '0':
        return
    if multiprocessing.current_process().name != 'MainProcess':
        return
    from mmengine.logging import print_log

    print_log(summary(active), logger='current', level=logging.INFO)


_log_once(apply())
