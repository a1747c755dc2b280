"""Turn a training checkpoint into a release file: weights and plain metadata.

    python tools/model_converters/publish_model.py IN_FILE OUT_FILE

writes ``<OUT_FILE without .pth>_<YYYYMMDD>-<sha256[:8]>.pth`` (OpenMMLab's
naming) with ``state_dict`` and ``meta`` only, ``meta`` reduced to plain
data (``dataset_meta``, config text, seed, epoch, versions): it loads with
``torch.load(..., weights_only=True)``, and into the plain config (e.g.
``LinearClsHead``, whose keys a BAKE head shares) without mmbake.
"""
import argparse
import os.path as osp
import pickle
from typing import Any, List, Optional

import numpy as np
import torch

_PLAIN_SCALARS = (str, int, float, bool, type(None))
# Returned by sanitize() for a value that has no plain-data form.
_DROP = object()


def sanitize(value: Any, path: str, dropped: List[str]) -> Any:
    """Reduce ``value`` to data that ``torch.load(weights_only=True)`` reads.

    Numpy scalars and arrays become Python numbers and lists; any type
    other than dicts, lists, tuples, strings, numbers, booleans, None and
    tensors is dropped (``_DROP`` is returned) and its dotted path, from
    ``path``, appended to ``dropped``.
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


def publish_checkpoint(in_file: str, out_file: str) -> str:
    """Write the release file of ``in_file`` and return its path.

    Args:
        in_file (str): A checkpoint written by mmengine's runner, or a bare
            ``state_dict``; read with the weights-only unpickler.
        out_file (str): Requested output path (date and hash are appended);
            missing folders are created.

    Returns:
        str: Path of the published file.
    """
    # Imported here, not at the top, so that ``--help`` stays instant.
    import mmpretrain

    from mmbake import __version__ as mmbake_version
    from mmbake.utils import load_checkpoint_weights_only, save_release

    checkpoint = load_checkpoint_weights_only(in_file)
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
    meta.setdefault('mmpretrain_version', mmpretrain.__version__)
    meta.setdefault('mmbake_version', mmbake_version)
    if dropped:
        print('Dropped metadata that is not plain data: ' + ', '.join(dropped))
    if not meta.get('dataset_meta'):
        print('Warning: no meta["dataset_meta"] (class names); inference '
              'tools will fall back to the config\'s dataset.')
    return save_release(dict(state_dict=state_dict, meta=meta), out_file)


def main(argv: Optional[List[str]] = None) -> str:
    """Publish the checkpoint named on the command line; return the path."""
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
    try:
        final = publish_checkpoint(args.in_file, args.out_file)
    except (ValueError, pickle.UnpicklingError) as err:
        parser.error(f'{args.in_file}: {err}')
    print(f'Published {final}')
    return final


if __name__ == '__main__':
    main()
