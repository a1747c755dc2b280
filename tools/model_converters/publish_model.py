"""Turn a training checkpoint into a release: weights and plain metadata.

    python tools/model_converters/publish_model.py IN_FILE OUT_FILE

writes ``<OUT_FILE without .pth>_<YYYYMMDD>-<sha256[:8]>.pth``: ``state_dict``
and ``meta`` (dataset_meta, config, seed, epoch, versions) as plain data.
"""
import argparse
import os.path as osp
from typing import Any, List, Optional

import numpy as np
import torch

_PLAIN_SCALARS = (str, int, float, bool, type(None))
_DROP = object()  # sanitize()'s result for a value without plain-data form


def sanitize(value: Any, path: str, dropped: List[str]) -> Any:
    """``value`` as plain data (numpy as numbers and lists); other types but
    str, numbers, bool, None, tensors and containers dropped (``_DROP``),
    their dotted path from ``path`` added to ``dropped``."""
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
            out[key] = sanitize(item, f'{path}.{key}', dropped)
        return {k: v for k, v in out.items() if v is not _DROP}
    if isinstance(value, (list, tuple)):
        items = (sanitize(v, f'{path}[{i}]', dropped)
                 for i, v in enumerate(value))
        items = [v for v in items if v is not _DROP]
        return items if isinstance(value, list) else tuple(items)
    dropped.append(f'{path} ({type(value).__name__})')
    return _DROP


def publish_checkpoint(in_file: str, out_file: str) -> str:
    """Write the release file of ``in_file``.

    Args:
        in_file (str): A training checkpoint or a bare ``state_dict``.
        out_file (str): Requested path (date and hash are appended).

    Returns:
        str: Path of the published file.
    """
    import mmpretrain  # here, so that ``--help`` stays instant

    import mmbake
    from mmbake.utils import load_checkpoint_weights_only, save_release

    checkpoint = load_checkpoint_weights_only(in_file)
    bare = 'state_dict' not in checkpoint
    state_dict = checkpoint if bare else checkpoint['state_dict']
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad or (bare and not checkpoint):
        raise ValueError(
            f'state_dict entries that are not tensors: {bad}' if not bare else
            'the checkpoint has no "state_dict" and is not a bare state '
            f'dict; its top-level keys are {sorted(map(str, checkpoint))}')
    meta = {} if bare else checkpoint.get('meta') or {}
    meta = sanitize(meta, 'meta', dropped := [])
    meta.setdefault('mmpretrain_version', mmpretrain.__version__)
    meta.setdefault('mmbake_version', mmbake.__version__)
    if dropped:
        print('Dropped metadata that is not plain data: ' + ', '.join(dropped))
    if not meta.get('dataset_meta'):
        print('Warning: no meta["dataset_meta"] (class names); inference '
              'tools will fall back to the config\'s dataset.')
    return save_release(dict(state_dict=state_dict, meta=meta), out_file)


def main(argv: Optional[List[str]] = None) -> str:
    """Publish the checkpoint named on the command line; return the path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('in_file', help='checkpoint written by training')
    parser.add_argument(
        'out_file', help='release name (date and hash are appended)')
    args = parser.parse_args(argv)
    if not osp.isfile(args.in_file):
        parser.error(f'in_file {args.in_file!r} is not a file')
    try:
        final = publish_checkpoint(args.in_file, args.out_file)
    except ValueError as err:  # also what the weights-only loading refuses
        parser.error(f'{args.in_file}: {err}')
    print(f'Published {final}')
    return final


if __name__ == '__main__':
    main()
