"""Training checkpoints that torch's weights-only unpickler reads.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine
0.10.7 (``mmengine/runner/checkpoint.py``, ``load_from_local``) calls
``torch.load`` without the argument. mmengine's training checkpoints hold
``message_hub``'s ``HistoryBuffer``s and numpy arrays and scalars, which
that unpickler refuses (``Unsupported global: GLOBAL
mmengine.logging.history_buffer.HistoryBuffer``).
:func:`checkpoint_to_plain` stores them as tensors and plain data, which it
reads with nothing added to its allowlist, and :func:`checkpoint_from_plain`
rebuilds them (``SafeCheckpointHook`` does both). :func:`checkpoint_globals`
allows exactly the types of mmengine's own format inside a ``with`` block,
for checkpoints written without that hook.
"""
import contextlib
import copy
import os
import pickle
import zipfile
from collections import Counter, OrderedDict
from typing import Any, Callable, ContextManager, Dict, List, Optional

import numpy as np
import torch

# Where torch has no allowlist (torch < 2.5), it does not load weights-only
# by default either, and checkpoints load as mmengine loads them.
HAS_ALLOWLIST = hasattr(torch.serialization, 'safe_globals')
# The statistics HistoryBuffer registers for itself (see
# HistoryBuffer._set_default_statistics); checkpoints reference them by name.
_STATISTICS = ('min', 'max', 'current', 'mean')
# Key of the dicts that stand for a value stored as tensors and plain data;
# its value names what the dict stands for.
PLAIN_TAG = '__mmbake_plain__'
# What the weights-only unpickler reads without an allowlist (torch 2.x).
_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes, bytearray,
                 torch.Tensor, torch.nn.Parameter, torch.Size, torch.dtype,
                 torch.device)
# Counter: MultiStepLR's milestones.
_CONTAINERS = (dict, OrderedDict, Counter, list, tuple)
# A HistoryBuffer's state; pickling adds the class's statistics_methods
# (methods registered on the class by the code that defines them).
_BUFFER_STATE = {
    'max_length', '_log_history', '_count_history', 'statistics_methods'
}


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


def _map_items(value: Any, convert: Callable[[Any, str], Any],
               path: str) -> Any:
    """``value`` (one of :data:`_CONTAINERS`) with ``convert(item,
    item_path)`` applied to its items: the same object if no item changed,
    else a copy (an ``OrderedDict`` keeps attributes such as a
    ``state_dict``'s ``_metadata``)."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    changed = {}
    for key, item in items:
        new = convert(item, f'{path}[{key!r}]')
        if new is not item:
            changed[key] = new
    if not changed:
        return value
    if isinstance(value, tuple):
        return tuple(changed.get(i, item) for i, item in enumerate(value))
    out = copy.copy(value)
    for key, new in changed.items():
        out[key] = new
    return out


def checkpoint_to_plain(value: Any,
                        path: str = 'checkpoint',
                        refused: Optional[List[str]] = None) -> Any:
    """``value`` with its numpy arrays and scalars and ``HistoryBuffer``s as
    ``{PLAIN_TAG: kind, ...}`` dicts of tensors and plain data, which
    ``torch.load(weights_only=True)`` reads with its default allowlist.

    Containers are copied only where something inside them changes.

    Args:
        value: A checkpoint, or a part of one.
        path (str): How messages name ``value``.
        refused (list, optional): Gets ``'<path> (<type>)'`` for every value
            that has no such form (another class, a dict key that is not
            plain, a numpy dtype that torch has not); it is left as it was.

    Returns:
        The converted value.
    """
    from mmengine.logging import HistoryBuffer

    refused = [] if refused is None else refused
    kind = type(value)
    if kind in _PLAIN_LEAVES or (kind is set and all(
            type(item) in _PLAIN_LEAVES for item in value)):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        try:  # a copy: contiguous, and a scalar becomes a 0-d array
            data = torch.from_numpy(np.array(value))
        except (TypeError, ValueError, RuntimeError):
            data = None
        if data is not None and data.numpy().dtype == value.dtype:
            plain = 'numpy.ndarray' if kind is np.ndarray else 'numpy.generic'
            return {PLAIN_TAG: plain, 'data': data}
    elif kind is HistoryBuffer and set(vars(value)) <= _BUFFER_STATE:
        state = dict(
            max_length=value.max_length,
            log_history=value._log_history,
            count_history=value._count_history)
        return dict({PLAIN_TAG: 'HistoryBuffer'},
                    **checkpoint_to_plain(state, path, refused))
    elif kind in _CONTAINERS:
        bad_keys = [
            key for key in (value if isinstance(value, dict) else ())
            if not isinstance(key, (str, int, float, bool, type(None)))
        ]
        if not bad_keys:
            return _map_items(
                value, lambda item, at: checkpoint_to_plain(item, at, refused),
                path)
        refused.extend(f'{path} (key {key!r})' for key in bad_keys)
        return value
    refused.append(f'{path} ({kind.__name__})')
    return value


def checkpoint_from_plain(value: Any, path: str = 'checkpoint') -> Any:
    """The inverse of :func:`checkpoint_to_plain`: numpy values (on the CPU)
    and ``HistoryBuffer``s rebuilt from their dicts; anything else, such as
    a checkpoint in mmengine's own format, is returned unchanged.

    Args:
        value: A checkpoint, or a part of one.
        path (str): Where ``value`` is, for :func:`_map_items`.

    Returns:
        The rebuilt value.
    """
    if type(value) not in _CONTAINERS:
        return value
    value = _map_items(value, checkpoint_from_plain, path)
    kind = value.get(PLAIN_TAG) if isinstance(value, dict) else None
    if kind == 'numpy.ndarray':
        return np.array(value['data'].cpu().numpy())
    if kind == 'numpy.generic':
        return value['data'].cpu().numpy()[()]
    if kind == 'HistoryBuffer':
        from mmengine.logging import HistoryBuffer
        return HistoryBuffer(value['log_history'], value['count_history'],
                             value['max_length'])
    return value


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
    weights-only, inside :func:`checkpoint_globals`, tensors memory-mapped;
    values stored by :func:`checkpoint_to_plain` are rebuilt.

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
    return checkpoint_from_plain(checkpoint)
