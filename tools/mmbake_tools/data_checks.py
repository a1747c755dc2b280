"""Data that is not there, or whose labels do not fit the model.

Reported by config key, path and the place in the docs that says how to
prepare the data, as one ``error:`` line (see ``cli.errors_as_one_line``)
instead of a traceback from deep inside a dataset class.
"""
import contextlib
import inspect
import os
import os.path as osp
from typing import Any, Iterator, Optional, Sequence, Tuple

import numpy as np
from mmengine.config import Config

# Where a user learns how to prepare each dataset the configs use.
DATA_DOCS = 'docs/get_started.md, section "Data"'
# The loop config without which the runner never builds a dataloader.
_LOOP_OF_LOADER = {
    'train_dataloader': 'train_cfg',
    'val_dataloader': 'val_cfg',
    'test_dataloader': 'test_cfg',
}
# What a dataset class raises when its files are missing or unreadable:
# mmengine and mmpretrain use OSError (FileNotFoundError), RuntimeError
# (mmpretrain's MNIST family) and assert.
_READ_ERRORS = (OSError, RuntimeError, AssertionError)


def check_data_paths(cfg: Config, loaders: Sequence[str]) -> None:
    """Refuse a dataset whose folder or files are not there.

    Reads the dataset configs only (nothing is built): ``data_root``, then
    ``ann_file`` and ``data_prefix`` joined to it as mmengine's
    ``BaseDataset`` joins them, for every dataset inside wrappers
    (``dataset=``, ``datasets=``). Datasets that download themselves
    (``download=True``, also as their class's default), datasets on a
    storage backend (``backend_args``) and remote paths (``s3://...``) are
    not checked.

    Args:
        cfg (Config): The merged config.
        loaders (Sequence[str]): Dataloader fields the tool builds; one
            whose loop config (``train_cfg``, ...) is None is skipped.

    Raises:
        ValueError: Naming the first missing path, its config key and
            :data:`DATA_DOCS`.
    """
    scope = cfg.get('default_scope', None) or 'mmpretrain'
    for loader in loaders:
        loader_cfg = cfg.get(loader, None)
        if not loader_cfg or cfg.get(_LOOP_OF_LOADER[loader], None) is None:
            continue
        dataset_cfg = loader_cfg.get('dataset', None)
        if not isinstance(dataset_cfg, dict):
            continue
        for key, path in _expected_paths(dataset_cfg, f'{loader}.dataset',
                                         scope):
            if '://' not in path and not osp.exists(path):
                raise ValueError(_missing_message(key, path))


def _expected_paths(dataset_cfg: dict, key: str,
                    scope: str) -> Iterator[Tuple[str, str]]:
    """``(config key, path)`` of every file or folder a dataset reads."""
    if isinstance(dataset_cfg.get('dataset'), dict):
        yield from _expected_paths(dataset_cfg['dataset'], f'{key}.dataset',
                                   scope)
    children = dataset_cfg.get('datasets')
    if isinstance(children, (list, tuple)):
        for i, child in enumerate(children):
            if isinstance(child, dict):
                yield from _expected_paths(child, f'{key}.datasets.{i}',
                                           scope)
    if dataset_cfg.get('backend_args') or _downloads(dataset_cfg, scope):
        return
    root = dataset_cfg.get('data_root') or ''
    if not isinstance(root, str):
        return
    if root:
        yield f'{key}.data_root', root
    ann_file = dataset_cfg.get('ann_file') or ''
    if isinstance(ann_file, str) and ann_file:
        yield f'{key}.ann_file', _under(root, ann_file)
    prefix = dataset_cfg.get('data_prefix') or ''
    prefixes = prefix.items() if isinstance(prefix, dict) else [(None, prefix)]
    for name, value in prefixes:
        if isinstance(value, str) and value:
            suffix = '' if name is None else f'.{name}'
            yield f'{key}.data_prefix{suffix}', _under(root, value)


def _under(root: str, path: str) -> str:
    """``path`` joined to ``root`` unless absolute, as mmengine joins."""
    return path if osp.isabs(path) or not root else osp.join(root, path)


def _downloads(dataset_cfg: dict, scope: str) -> bool:
    """Whether the dataset fetches its data itself (or cannot be judged).

    An unknown type counts as downloading: the runner's registry error
    names it better than a path check could.
    """
    if 'download' in dataset_cfg:
        return bool(dataset_cfg['download'])
    dataset_type = dataset_cfg.get('type')
    if isinstance(dataset_type, str):
        from mmengine.registry import DATASETS

        name = dataset_type if '.' in dataset_type else \
            f'{scope}.{dataset_type}'
        dataset_type = DATASETS.get(name)
    if not inspect.isclass(dataset_type):
        return True
    download = inspect.signature(dataset_type).parameters.get('download')
    return download is not None and download.default is True


def _missing_message(key: str, path: str) -> str:
    where = path if osp.isabs(path) else f'{path} (relative to {os.getcwd()})'
    return f'{key}: {where} does not exist. {_how_to_fix(key)}'


def _how_to_fix(key: str) -> str:
    return (f'Prepare the dataset ({DATA_DOCS}), or set its path with '
            f'--cfg-options {key}=PATH')


@contextlib.contextmanager
def reading_data(cfg: Config, loader: str) -> Iterator[None]:
    """Report a dataset that fails to read its files by its config key.

    Wraps the building of ``loader`` (``runner.train_loop`` and the like):
    an OSError, RuntimeError or AssertionError raised inside a dataset's own
    code becomes a ValueError naming ``<loader>.dataset``, its type and
    ``data_root``, the dataset's message (which names the path) and
    :data:`DATA_DOCS`. Anything else passes through unchanged.

    Args:
        cfg (Config): The merged config.
        loader (str): The dataloader field being built.

    Raises:
        ValueError: For data that could not be read.
    """
    try:
        yield
    except _READ_ERRORS as err:
        if not _raised_by_dataset(err):
            raise
        dataset_cfg = cfg[loader].get('dataset', None) or {}
        raise ValueError(
            f'{loader}.dataset ({dataset_cfg.get("type")}, data_root '
            f'{dataset_cfg.get("data_root")!r}) could not be read: '
            f'{str(err).rstrip(".")}. '
            f'{_how_to_fix(f"{loader}.dataset.data_root")}') from err


def _raised_by_dataset(err: BaseException) -> bool:
    """Whether ``err`` (or the error it was raised from) left dataset code.

    True when a frame of its traceback is a method of a torch ``Dataset``
    (mmengine's and mmpretrain's datasets are).
    """
    from torch.utils.data import Dataset

    seen = set()
    current: Optional[BaseException] = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frame_tb = current.__traceback__
        while frame_tb is not None:
            owner = frame_tb.tb_frame.f_locals.get('self')
            if isinstance(owner, Dataset):
                return True
            frame_tb = frame_tb.tb_next
        current = current.__cause__ or current.__context__
    return False


def check_labels_fit(model: Any, dataset: Any, loader: str) -> None:
    """Refuse a dataset with labels that the model's head has no class for.

    Without this, cross-entropy fails deep in training with ``IndexError:
    Target 7 is out of bounds``. Labels are read without loading images
    (``mmbake.datasets.get_dataset_labels``); multi-label and unlabelled
    datasets are not checked.

    Args:
        model (Any): The runner's model (a DDP wrapper is unwrapped).
        dataset (Any): The built dataset of ``loader``.
        loader (str): Its dataloader field, for the message.

    Raises:
        ValueError: See :func:`check_label_values`.
    """
    from mmbake.datasets import get_dataset_labels

    try:
        labels = get_dataset_labels(dataset)
    except ValueError:
        return
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    check_label_values(model, labels, loader, classes)


def check_label_values(model: Any,
                       labels: Sequence[int],
                       loader: str,
                       classes: Optional[Sequence[str]] = None) -> None:
    """Refuse labels that the model's head has no class for.

    Models without ``head.num_classes`` are not checked.

    Args:
        model (Any): The model (a DDP wrapper is unwrapped).
        labels (Sequence[int]): Class indices of samples of ``loader``.
        loader (str): Their dataloader field, for the message.
        classes (Sequence[str], optional): The dataset's class names, for
            its class count; else the largest label + 1 counts.

    Raises:
        ValueError: Naming the largest label, ``model.head.num_classes``
            and the dataset's class count.
    """
    model = getattr(model, 'module', model)
    num_classes = getattr(getattr(model, 'head', None), 'num_classes', None)
    if not isinstance(num_classes, int) or num_classes < 1:
        return
    labels = np.asarray(labels, dtype=np.int64)
    beyond = np.flatnonzero(labels >= num_classes)
    if beyond.size == 0:
        return
    num_data_classes = len(classes) if classes else int(labels.max()) + 1
    raise ValueError(
        f'{loader}.dataset has labels up to {int(labels.max())} (first '
        f'sample {int(beyond[0])}; {beyond.size} of {labels.size} samples '
        f'have a label >= {num_classes}), but model.head.num_classes is '
        f'{num_classes}. The dataset has {num_data_classes} classes: set '
        f'model.head.num_classes={num_data_classes} (and '
        'data_preprocessor.num_classes, where the config sets it)')
