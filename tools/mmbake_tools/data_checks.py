"""Data that is not there, or whose labels do not fit the model.

Reported by config key, path and the place in the docs that says how to
prepare the data, as one ``error:`` line (``cli.errors_as_one_line``)
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
# What a dataset class raises when its files are missing or unreadable:
# mmengine and mmpretrain use OSError (FileNotFoundError), RuntimeError
# (mmpretrain's MNIST family) and assert.
_READ_ERRORS = (OSError, RuntimeError, AssertionError)


def _how_to_fix(key: str) -> str:
    return (f'Prepare the dataset ({DATA_DOCS}), or set its path with '
            f'--cfg-options {key}=PATH')


def check_data_paths(cfg: Config, loaders: Sequence[str]) -> None:
    """Refuse a dataset whose ``data_root`` is not there, by config key.

    Reads the dataset configs only (nothing is built), also inside wrappers
    (``dataset=``, ``datasets=``). Datasets that download themselves
    (``download=True``, also as their class's default), on a storage
    backend (``backend_args``) or at a remote path are not checked; files
    missing under the root are reported by :func:`reading_data`.

    Args:
        cfg (Config): The merged config.
        loaders (Sequence[str]): Dataloader fields the tool builds; one
            whose loop config (``train_cfg``, ...) is None is skipped.
    """
    scope = cfg.get('default_scope', None) or 'mmpretrain'
    for loader in loaders:
        loop = loader.replace('_dataloader', '_cfg')
        dataset_cfg = (cfg.get(loader, None) or {}).get('dataset', None)
        if cfg.get(loop, None) is None or not isinstance(dataset_cfg, dict):
            continue
        for key, root in _data_roots(dataset_cfg, f'{loader}.dataset', scope):
            if '://' in root or osp.exists(root):
                continue
            where = root if osp.isabs(root) else \
                f'{root} (relative to {os.getcwd()})'
            raise ValueError(
                f'{key}: {where} does not exist. {_how_to_fix(key)}')


def _data_roots(dataset_cfg: dict, key: str,
                scope: str) -> Iterator[Tuple[str, str]]:
    """``(config key, data_root)`` of a dataset and the ones it wraps."""
    wrapped = [('dataset', dataset_cfg.get('dataset'))]
    children = dataset_cfg.get('datasets')
    if isinstance(children, (list, tuple)):
        wrapped += [(f'datasets.{i}', c) for i, c in enumerate(children)]
    for name, child in wrapped:
        if isinstance(child, dict):
            yield from _data_roots(child, f'{key}.{name}', scope)
    root = dataset_cfg.get('data_root')
    if (root and isinstance(root, str) and not dataset_cfg.get('backend_args')
            and not _downloads(dataset_cfg, scope)):
        yield f'{key}.data_root', root


def _downloads(dataset_cfg: dict, scope: str) -> bool:
    """Whether the dataset fetches its data itself, or cannot be judged (an
    unknown type: the runner's registry error names it better)."""
    if 'download' in dataset_cfg:
        return bool(dataset_cfg['download'])
    dataset_type = dataset_cfg.get('type')
    if isinstance(dataset_type, str):
        from mmengine.registry import DATASETS

        dataset_type = DATASETS.get(
            dataset_type if '.' in dataset_type else f'{scope}.{dataset_type}')
    if not inspect.isclass(dataset_type):
        return True
    download = inspect.signature(dataset_type).parameters.get('download')
    return download is not None and download.default is True


@contextlib.contextmanager
def reading_data(cfg: Config, loader: str) -> Iterator[None]:
    """Report a dataset that fails to read its files by its config key.

    Around the building of ``loader`` (``runner.train_loop`` and the like),
    an OSError, RuntimeError or AssertionError raised by a torch
    ``Dataset``'s own code becomes a ValueError naming ``<loader>.dataset``,
    its type and ``data_root``, the dataset's message and :data:`DATA_DOCS`.

    Args:
        cfg (Config): The merged config.
        loader (str): The dataloader field being built.
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
    """Whether a frame of the traceback of ``err``, or of the errors it was
    raised from, is a method of a torch ``Dataset``."""
    from torch.utils.data import Dataset

    seen = set()
    current: Optional[BaseException] = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frame_tb = current.__traceback__
        while frame_tb is not None:
            if isinstance(frame_tb.tb_frame.f_locals.get('self'), Dataset):
                return True
            frame_tb = frame_tb.tb_next
        current = current.__cause__ or current.__context__
    return False


def check_labels_fit(model: Any, dataset: Any, loader: str) -> None:
    """Refuse a dataset with labels that the model's head has no class for
    (cross-entropy would fail in training with ``IndexError: Target 7 is out
    of bounds``). Labels are read without loading images; multi-label and
    unlabelled datasets are not checked.

    Args:
        model (Any): The runner's model.
        dataset (Any): The built dataset of ``loader``.
        loader (str): Its dataloader field, for the message.
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
    """Refuse labels that the model's head has no class for, with a
    ValueError naming the largest label, ``model.head.num_classes`` and the
    dataset's class count. Models without ``head.num_classes`` pass.

    Args:
        model (Any): The model (a DDP wrapper is unwrapped).
        labels (Sequence[int]): Class indices of samples of ``loader``.
        loader (str): Their dataloader field, for the message.
        classes (Sequence[str], optional): The dataset's class names, for
            its class count; else the largest label + 1 counts.
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
