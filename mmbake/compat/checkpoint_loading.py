"""Fix 1: weights-only ``torch.load`` of mmengine training checkpoints."""
import contextlib
import os
import pickle
import zipfile
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from mmengine.utils import digit_version

# The statistics HistoryBuffer registers for itself (see
# HistoryBuffer._set_default_statistics); checkpoints reference them by name.
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


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


def checkpoint_safe_globals() -> List[Any]:
    """The types that mmengine's training checkpoints hold beyond tensors.

    The checkpoint's ``message_hub`` holds HistoryBuffers (numpy arrays
    inside, plus their statistics methods) and numpy scalars; ``meta``,
    ``optimizer`` and ``param_schedulers`` hold only tensors and builtins.

    Returns:
        list: Entries for ``torch.serialization.add_safe_globals`` or
        ``torch.serialization.safe_globals``.
    """
    from mmengine.logging import HistoryBuffer

    return [
        HistoryBuffer,
        (history_buffer_getattr, 'builtins.getattr'),
        *_numpy_safe_globals(),
    ]


def allowlist_checkpoint_globals() -> bool:
    """Let weights-only ``torch.load`` read mmengine training checkpoints.

    torch >= 2.6 defaults ``torch.load`` to ``weights_only=True``, and
    mmengine 0.10.7's checkpoint loader calls ``torch.load`` without that
    argument, so ``resume`` and ``load_from`` of a checkpoint written by the
    runner fail with ``UnpicklingError`` (``Unsupported global: GLOBAL
    mmengine.logging.history_buffer.HistoryBuffer``). Exactly the types of
    :func:`checkpoint_safe_globals` are added to torch's process-wide
    allowlist; any other class in any file is still refused.

    Returns:
        bool: True if the allowlist was extended, False where not needed
        (torch < 2.6) or not possible (no ``add_safe_globals``).
    """
    serialization = torch.serialization
    if not (weights_only_is_default()
            and hasattr(serialization, 'add_safe_globals')):
        return False
    serialization.add_safe_globals(checkpoint_safe_globals())
    return True


def _allowed_for_this_load() -> contextlib.AbstractContextManager:
    """Allow the types of :func:`checkpoint_safe_globals` for one load.

    torch's ``safe_globals`` context removes its entries on exit, also those
    that ``add_safe_globals`` had registered before (fix 1), so it is given
    only the entries not registered already.
    """
    registered = set(torch.serialization.get_safe_globals())
    return torch.serialization.safe_globals([
        entry for entry in checkpoint_safe_globals() if entry not in registered
    ])


def checkpoint_is_truncated(path: str) -> bool:
    """Whether a checkpoint file was cut short (e.g. killed while saved).

    ``torch.save`` writes a zip archive whose directory comes last, so a
    file that starts like a zip archive but has no readable directory is
    incomplete. Files in torch's legacy (non-zip) format cannot be judged
    this cheaply and count as complete.

    Args:
        path (str): The checkpoint file.

    Returns:
        bool: True for an empty file or a zip archive without its
        directory.
    """
    if os.path.getsize(path) == 0:
        return True
    with open(path, 'rb') as f:
        is_zip_start = f.read(4) == b'PK\x03\x04'
    return is_zip_start and not zipfile.is_zipfile(path)


def load_checkpoint_weights_only(path: str) -> Dict[str, Any]:
    """Read a checkpoint onto the CPU without running any code in it.

    The weights-only unpickler is used with the types of
    :func:`checkpoint_safe_globals` allowed, so mmengine training checkpoints
    and published ones load, and a file holding any other class is refused.
    The allowlist holds only for this call (``MMBAKE_COMPAT=0`` leaves
    torch's process-wide allowlist untouched). Tensors of a zip-format file
    are memory-mapped, not read, so checking a large checkpoint is cheap. On
    torch < 2.6, where that allowlist is not available, the file is loaded
    the way mmengine itself loads it there.

    Args:
        path (str): The checkpoint file.

    Returns:
        dict: The checkpoint.

    Raises:
        ValueError: If the file is truncated, is not a checkpoint dict, or
            holds objects that the weights-only unpickler refuses.
    """
    if checkpoint_is_truncated(path):
        raise ValueError(
            f'{path} is not a complete checkpoint: the file was cut short '
            '(for example, the process saving it was killed).')
    weights_only = weights_only_is_default() and hasattr(
        torch.serialization, 'safe_globals')
    kwargs: Dict[str, Any] = dict(
        map_location='cpu', weights_only=weights_only)
    if zipfile.is_zipfile(path) and digit_version(
            torch.__version__) >= digit_version('2.1.0'):
        kwargs['mmap'] = True
    allowed = (
        _allowed_for_this_load() if weights_only else contextlib.nullcontext())
    try:
        with allowed:
            checkpoint = torch.load(path, **kwargs)
    except pickle.UnpicklingError as err:
        # torch's message first suggests weights_only=False; keep only the
        # line that names what was refused.
        lines = [line.strip() for line in str(err).splitlines()]
        reason = next(
            (line for line in lines
             if 'unsupported' in line.lower() or 'WeightsUnpickler' in line),
            lines[0] if lines else '')
        raise ValueError(
            f'{path} holds objects that torch.load(weights_only=True) '
            'refuses, so it is not read (allowed: tensors, plain data and '
            f"the types of mmengine's training checkpoints): {reason}"
        ) from err
    # A damaged or foreign file fails inside torch's reader with whatever
    # its bytes provoke.
    except (RuntimeError, KeyError, EOFError, ValueError) as err:
        raise ValueError(f'{path} is not a readable checkpoint: {err!r}') \
            from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path} holds a {type(checkpoint).__name__}, '
                         'expected a checkpoint dict.')
    return checkpoint
