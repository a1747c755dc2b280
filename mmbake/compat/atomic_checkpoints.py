"""Fix 4: checkpoints that a kill while saving cannot leave half written."""
import builtins
import functools
import io
import os.path as osp
from typing import IO, Any, Callable, List, Optional, Tuple

import torch

from ..utils import write_atomically
from ._common import PATCH_MARK, install, mark

# Name of mmengine's pointer file to the latest checkpoint of a work dir.
_POINTER_NAME = 'last_checkpoint'


def _atomic_local_save(original: Callable) -> Callable:
    """Wrap mmengine's ``save_checkpoint`` to write local files atomically."""

    @functools.wraps(original)
    def save_checkpoint(checkpoint: dict,
                        filename: str,
                        file_client_args: Optional[dict] = None,
                        backend_args: Optional[dict] = None) -> None:
        if (file_client_args is not None or backend_args is not None
                or '://' in str(filename)):
            # Remote storage (petrel, pavi, ...) keeps mmengine's own path.
            return original(
                checkpoint,
                filename,
                file_client_args=file_client_args,
                backend_args=backend_args)
        write_atomically(lambda f: torch.save(checkpoint, f), str(filename))

    return mark(save_checkpoint)


class _AtomicPointerFile(io.StringIO):
    """Text written to it reaches ``path`` atomically when it is closed."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def __exit__(self, exc_type, exc_value, traceback) -> bool:
        if exc_type is None:
            data = self.getvalue().encode('utf-8')
            write_atomically(lambda f: f.write(data), self._path)
        self.close()
        return False


def _pointer_open(file: Any, mode: str = 'r', *args, **kwargs) -> IO:
    """``open`` for mmengine's checkpoint hook module.

    ``CheckpointHook`` writes the ``last_checkpoint`` pointer with
    ``open(path, 'w')``, its only call of ``open``; that one write goes
    through :func:`write_atomically`, anything else to the builtin.
    """
    if (mode == 'w' and not args and not kwargs
            and osp.basename(str(file)) == _POINTER_NAME):
        return _AtomicPointerFile(str(file))
    return builtins.open(file, mode, *args, **kwargs)


class _DeferredRemoval:
    """A file backend whose ``remove``/``rmtree`` wait for :meth:`flush`."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._pending: List[Tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def remove(self, path: str) -> None:
        self._pending.append(('remove', path))

    def rmtree(self, path: str) -> None:
        self._pending.append(('rmtree', path))

    def flush(self) -> None:
        """Carry out the removals that were asked for."""
        for method, path in self._pending:
            getattr(self._backend, method)(path)
        self._pending.clear()


def _remove_outdated_after_saving(original: Callable) -> Callable:
    """Wrap ``CheckpointHook._save_checkpoint_with_step``: delete late."""

    @functools.wraps(original)
    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        backend = getattr(self, 'file_backend', None)
        if backend is None:
            return original(self, runner, step, meta)
        deferred = _DeferredRemoval(backend)
        self.file_backend = deferred
        try:
            original(self, runner, step, meta)
        finally:
            self.file_backend = backend
        # Only once the new checkpoint and the pointer to it are written.
        deferred.flush()

    return _save_checkpoint_with_step


def patch_atomic_checkpoints() -> bool:
    """Make a kill while saving leave a checkpoint that resume can use.

    mmengine 0.10.7 (``mmengine/runner/checkpoint.py::save_checkpoint``)
    serialises a checkpoint and writes the bytes straight onto the final
    name; ``CheckpointHook`` then overwrites ``last_checkpoint`` in place,
    and with ``max_keep_ckpts`` it deletes the outdated checkpoint *before*
    saving the new one. A job killed while saving (preemption, OOM killer,
    ``kill -9``) could therefore leave a truncated ``epoch_N.pth`` that
    ``--resume PATH`` picks and fails on, an empty pointer, or, with
    ``max_keep_ckpts=1``, no complete checkpoint at all. Now:

    - local checkpoints (no ``backend_args``, no ``scheme://``) are written
      through :func:`write_atomically`; remote storage is unchanged;
    - the hook's ``last_checkpoint`` write goes through it as well;
    - the hook deletes outdated checkpoints after the new one and the
      pointer are saved (for a moment, one checkpoint more is on disk).

    Returns:
        bool: True if the wrappers are installed (now or before).
    """
    import mmengine.hooks.checkpoint_hook as hook_module
    import mmengine.runner as runner_package
    import mmengine.runner.checkpoint as checkpoint_module
    import mmengine.runner.runner as runner_module

    original = checkpoint_module.save_checkpoint
    if not getattr(original, PATCH_MARK, False):
        wrapped = _atomic_local_save(original)
        # runner.py and the package import the function by name.
        for module in (checkpoint_module, runner_module, runner_package):
            if getattr(module, 'save_checkpoint', None) is original:
                module.save_checkpoint = wrapped

    if not install(hook_module.CheckpointHook, '_save_checkpoint_with_step',
                   _remove_outdated_after_saving):
        return False
    # A module global shadows the builtin for that module only.
    hook_module.open = _pointer_open
    return True
