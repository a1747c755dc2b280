"""Turn a training checkpoint into a release file: weights and plain metadata.

Usage::

    python tools/model_converters/publish_model.py IN_FILE OUT_FILE

``IN_FILE`` is a checkpoint written by mmengine's runner (e.g.
``work_dirs/<run>/epoch_15.pth``). ``OUT_FILE`` names the release, e.g.
``work_dirs/bake_resnet18_1xb64_fashion-mnist.pth``; the file written is
``<OUT_FILE without .pth>_<YYYYMMDD>-<first 8 hex digits of its sha256>.pth``,
OpenMMLab's naming for published weights.

The release keeps only ``state_dict`` and ``meta``. Optimizer, parameter
schedulers, message hub, EMA copies and any other training state are
dropped. ``meta`` is reduced to plain Python data (dicts, lists, tuples,
strings, numbers, booleans, None, tensors), keeping ``dataset_meta`` (class
names) and the run's provenance (config text, seed, epoch, versions).
The result loads with ``torch.load(..., weights_only=True)``, which the
tool checks before it names the file.

A BAKE head has the same ``state_dict`` keys as the head it extends, so the
release loads into the plain config (e.g. ``LinearClsHead``) in a process
that never imports mmbake.
"""
import argparse
import datetime
import hashlib
import io
import os
import os.path as osp
import pickle
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

# Top-level checkpoint keys that a release keeps; everything else is
# training state.
KEPT_KEYS = ('state_dict', 'meta')
_PLAIN_SCALARS = (str, int, float, bool, type(None))
# Returned by sanitize() for a value that has no plain-data form.
_DROP = object()


def load_training_checkpoint(path: str) -> Dict[str, Any]:
    """Load a checkpoint written by mmengine's runner, onto the CPU.

    Through ``mmbake.compat.load_checkpoint_weights_only``: the weights-only
    unpickler with the plain-data types of mmengine's ``message_hub``
    allowed for this one load, so no code in the file can run. On torch <
    2.6, where that allowlist is not available, the file is loaded the way
    mmengine itself loads it there: pass only checkpoints of your own runs.

    Args:
        path (str): The checkpoint file.

    Returns:
        dict: The checkpoint.
    """
    # Imported here, not at the top, so that ``--help`` stays instant.
    from mmbake.compat import load_checkpoint_weights_only

    return load_checkpoint_weights_only(path)


def sanitize(value: Any, path: str, dropped: List[str]) -> Any:
    """Reduce ``value`` to data that ``torch.load(weights_only=True)`` reads.

    Numpy scalars and arrays become Python numbers and lists; any other
    type outside dicts, lists, tuples, strings, numbers, booleans, None and
    tensors is dropped and its dotted path appended to ``dropped``.

    Args:
        value (Any): The value to reduce.
        path (str): Its dotted path, for the report of dropped entries.
        dropped (list[str]): Collects the paths of dropped entries.

    Returns:
        Any: The reduced value; ``_DROP`` if it was dropped.
    """
    if isinstance(value, _PLAIN_SCALARS):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, _PLAIN_SCALARS):
                dropped.append(f'{path}.{key!r}')
                continue
            item = sanitize(item, f'{path}.{key}', dropped)
            if item is not _DROP:
                out[key] = item
        return out
    if isinstance(value, (list, tuple)):
        items = [
            sanitize(item, f'{path}[{i}]', dropped)
            for i, item in enumerate(value)
        ]
        items = [item for item in items if item is not _DROP]
        return items if isinstance(value, list) else tuple(items)
    dropped.append(f'{path} ({type(value).__name__})')
    return _DROP


def release_contents(checkpoint: Dict[str, Any]) -> Tuple[dict, List[str]]:
    """Build the release dict from a training checkpoint.

    Args:
        checkpoint (dict): A checkpoint written by mmengine's runner, or a
            bare ``state_dict`` (a dict of tensors).

    Returns:
        tuple[dict, list[str]]: The release (``state_dict`` and ``meta``)
        and the dotted paths of the metadata entries that were dropped.
    """
    if 'state_dict' not in checkpoint:
        if not checkpoint or not all(
                isinstance(v, torch.Tensor) for v in checkpoint.values()):
            raise ValueError(
                'the checkpoint has no "state_dict" and is not a bare state '
                f'dict; its top-level keys are {sorted(map(str, checkpoint))}')
        checkpoint = dict(state_dict=checkpoint)

    state_dict = checkpoint['state_dict']
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f'state_dict entries that are not tensors: {bad}')

    dropped: List[str] = []
    meta = sanitize(checkpoint.get('meta') or {}, 'meta', dropped)
    import mmpretrain

    from mmbake import __version__ as mmbake_version
    meta.setdefault('mmpretrain_version', mmpretrain.__version__)
    meta.setdefault('mmbake_version', mmbake_version)
    return dict(state_dict=state_dict, meta=meta), dropped


def release_name(out_file: str, sha256: str,
                 date: Optional[datetime.date] = None) -> str:
    """The published file name: ``<out_file stem>_<YYYYMMDD>-<sha8>.pth``.

    Args:
        out_file (str): The requested output path, with or without ``.pth``.
        sha256 (str): Hex digest of the written file.
        date (datetime.date, optional): Defaults to today.

    Returns:
        str: The final path.
    """
    stem = out_file[:-len('.pth')] if out_file.endswith('.pth') else out_file
    date = date or datetime.date.today()
    return f'{stem}_{date:%Y%m%d}-{sha256[:8]}.pth'


def save_release(release: Dict[str, Any], out_file: str) -> str:
    """Write a release dict under its published name and return the path.

    The dict is serialised in memory, read back with
    ``torch.load(weights_only=True)`` (the promise of a release), named
    with :func:`release_name` and written atomically. Nothing is written if
    the check fails.

    Args:
        release (dict): ``state_dict`` and plain-data ``meta``.
        out_file (str): Requested output path (see :func:`release_name`);
            missing folders are created.

    Returns:
        str: Path of the written file.
    """
    # Serialised in memory: written to a file, torch.save would embed that
    # file's name in the archive, and the hash would depend on it.
    buffer = io.BytesIO()
    torch.save(release, buffer)
    data = buffer.getvalue()
    torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    final = release_name(out_file, hashlib.sha256(data).hexdigest())

    os.makedirs(osp.dirname(osp.abspath(final)), exist_ok=True)
    # Written under a temporary name and renamed, so that a reader never
    # sees a partial file under the final name.
    tmp_path = f'{final}.{os.getpid()}.tmp'
    try:
        with open(tmp_path, 'wb') as f:
            f.write(data)
        os.replace(tmp_path, final)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise
    return final


def publish_checkpoint(in_file: str, out_file: str) -> str:
    """Write the release file of ``in_file`` and return its path.

    Args:
        in_file (str): Checkpoint written by a training run.
        out_file (str): Requested output path (see :func:`release_name`);
            missing folders are created.

    Returns:
        str: Path of the published file.
    """
    release, dropped = release_contents(load_training_checkpoint(in_file))
    if dropped:
        print('Dropped metadata that is not plain data: ' + ', '.join(dropped))
    if not release['meta'].get('dataset_meta'):
        print('Warning: no meta["dataset_meta"] (class names); inference '
              'tools will fall back to the config\'s dataset.')
    return save_release(release, out_file)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        argparse.Namespace: ``in_file`` and ``out_file``.
    """
    parser = argparse.ArgumentParser(
        description='Strip a training checkpoint down to weights and plain '
        'metadata, and name it <name>_<date>-<sha256[:8]>.pth')
    parser.add_argument('in_file', help='checkpoint written by training')
    parser.add_argument(
        'out_file',
        help='release name, e.g. work_dirs/bake_resnet18_1xb64_fashion-'
        'mnist.pth (date and hash are appended)')
    args = parser.parse_args(argv)
    if not osp.isfile(args.in_file):
        parser.error(f'in_file {args.in_file!r} is not a file')
    return args


def main(argv: Optional[List[str]] = None) -> str:
    """Publish the checkpoint named on the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        str: Path of the published file.
    """
    args = parse_args(argv)
    try:
        final = publish_checkpoint(args.in_file, args.out_file)
    except (ValueError, pickle.UnpicklingError) as err:
        sys.exit(f'publish_model.py: error: {args.in_file}: {err}')
    print(f'Published {final}')
    return final


if __name__ == '__main__':
    main()
