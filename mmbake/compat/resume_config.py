"""Fix 6: ``Runner.resume`` must not execute a checkpoint's config text."""
import functools
import logging
from typing import Any, Callable

from ._common import install


def _drop_meta_config(original: Callable) -> Callable:
    """Wrap ``Runner.load_checkpoint`` to drop ``meta['config']``."""

    @functools.wraps(original)
    def load_checkpoint(self, filename: str, *args, **kwargs) -> Any:
        checkpoint = original(self, filename, *args, **kwargs)
        meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
        if isinstance(meta, dict) and 'config' in meta:
            meta.pop('config')
            from mmengine.logging import print_log
            print_log(
                f"mmbake: ignoring meta['config'] of {filename}: mmengine's "
                'Runner.resume would run it as Python code (only to compare '
                'gpu_ids); the run keeps its own config.',
                logger='current',
                level=logging.WARNING)
        return checkpoint

    return load_checkpoint


def patch_resume_config_exec() -> bool:
    """Keep ``--resume`` from executing code stored in a checkpoint.

    mmengine 0.10.7 ``Runner.resume`` passes ``checkpoint['meta']['config']``
    (when present) to ``Config.fromstring(..., file_format='.py')``, which
    executes it as a Python config file, only to read ``gpu_ids``. mmengine
    itself writes the config under ``meta['cfg']``; ``meta['config']`` comes
    from older OpenMMLab runners or from a crafted file, which torch's
    weights-only check cannot catch since the entry is a plain string. The
    entry is removed from checkpoints the runner loads, with a warning.

    Returns:
        bool: True if the wrapper is installed (now or before).
    """
    from mmengine.runner import Runner

    return install(Runner, 'load_checkpoint', _drop_meta_config)
