"""Read mmengine checkpoints with torch's weights-only unpickler.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine
0.10.7 (``mmengine/runner/checkpoint.py``, ``load_from_local``) calls
``torch.load`` without the argument, so resuming from or ``load_from`` a
checkpoint that the runner wrote fails (``Unsupported global: GLOBAL
mmengine.logging.history_buffer.HistoryBuffer``). :func:`checkpoint_globals`
allows exactly the types of a training checkpoint inside a ``with`` block.
"""
import contextlib
import os
import pickle
import zipfile
from typing import Any, Callable, ContextManager, Dict, List

import numpy as np
import torch

# Where torch has no allowlist (torch < 2.5), it does not load weights-only
# by default either, and checkpoints load as mmengine loads them.
HAS_ALLOWLIST = hasattr(torch.serialization, 'safe_globals')
# The statistics HistoryBuffer registers for itself (see
# HistoryBuffer._set_default_statistics); checkpoints reference them by name.
_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_getattr(obj: Any, name: str) -> Callable:
    """``getattr`` for HistoryBuffer's statistics methods only (else
    ``pickle.UnpicklingError``): pickle protocol 2 stores
    ``HistoryBuffer.mean`` as ``getattr(HistoryBuffer, 'mean')``, and the
    real ``getattr`` would open every attribute of every allowed class to a
    crafted file (``numpy.ndarray.tofile`` writes files)."""
    from mmengine.logging import HistoryBuffer

    if obj is HistoryBuffer and name in _STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'mmbake: refusing getattr({obj!r}, {name!r}) in a weights-only '
        f'load; only HistoryBuffer statistics methods {_STATISTICS} are '
        'allowed')


def checkpoint_safe_globals() -> List[Any]:
    """The types that mmengine's training checkpoints hold beyond tensors:
    HistoryBuffers of ``message_hub`` with their statistics methods, numpy
    arrays and scalars (rebuild functions under numpy 1's and numpy 2's
    module names) and numpy's numeric dtype classes (no object or string
    dtypes), as entries for ``torch.serialization.safe_globals``."""
    from mmengine.logging import HistoryBuffer

    entries: List[Any] = [
        HistoryBuffer, (history_buffer_getattr, 'builtins.getattr'),
        np.ndarray, np.dtype
    ]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries += [(np.zeros(1).__reduce__()[0], f'{module}._reconstruct'),
                    (np.float64(0).__reduce__()[0], f'{module}.scalar')]
    codes = np.typecodes['AllInteger'] + np.typecodes['AllFloat'] + '?'
    entries.extend({type(np.dtype(code)) for code in codes} - {np.dtype})
    return entries


def checkpoint_globals() -> ContextManager:
    """A context in which weights-only ``torch.load`` reads mmengine
    training checkpoints; any other class is still refused. Afterwards the
    allowlist is as it was (torch's ``safe_globals`` removes its entries on
    exit, so it is given only those not registered already)."""
    if not HAS_ALLOWLIST:
        return contextlib.nullcontext()
    registered = set(torch.serialization.get_safe_globals())
    return torch.serialization.safe_globals(
        [e for e in checkpoint_safe_globals() if e not in registered])


def checkpoint_is_truncated(path: str) -> bool:
    """Whether a checkpoint file was cut short (e.g. killed while saved):
    empty, or a zip archive (``torch.save``'s format) without the directory
    that comes last. Files in torch's legacy format count as complete."""
    if os.path.getsize(path) == 0:
        return True
    with open(path, 'rb') as f:
        is_zip_start = f.read(4) == b'PK\x03\x04'
    return is_zip_start and not zipfile.is_zipfile(path)


def load_checkpoint_weights_only(path: str) -> Dict[str, Any]:
    """Read a checkpoint onto the CPU without running any code in it:
    weights-only, inside :func:`checkpoint_globals`, tensors memory-mapped.

    Raises:
        ValueError: If the file is truncated, is not a checkpoint dict, or
            holds objects that the weights-only unpickler refuses.
    """
    if checkpoint_is_truncated(path):
        raise ValueError(
            f'{path} is not a complete checkpoint: the file was cut short '
            '(for example, the process saving it was killed).')
    kwargs: Dict[str, Any] = dict(map_location='cpu')
    if HAS_ALLOWLIST:
        kwargs.update(weights_only=True, mmap=zipfile.is_zipfile(path))
    try:
        with checkpoint_globals():
            checkpoint = torch.load(path, **kwargs)
    except pickle.UnpicklingError as err:
        # torch's message first suggests weights_only=False; keep the line
        # that names what was refused.
        lines = str(err).splitlines() or ['']
        reason = next((x.strip() for x in lines if 'nsupported' in x),
                      lines[0].strip())
        raise ValueError(
            f'{path} holds objects that torch.load(weights_only=True) '
            'refuses, so it is not read (allowed: tensors, plain data and '
            f"the types of mmengine's training checkpoints): {reason}"
        ) from err
    # A damaged or foreign file fails in torch's reader with whatever its
    # bytes provoke.
    except (RuntimeError, KeyError, EOFError, ValueError) as err:
        raise ValueError(f'{path} is not a readable checkpoint: {err!r}') \
            from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path} holds a {type(checkpoint).__name__}, '
                         'expected a checkpoint dict.')
    return checkpoint
