"""Read the class label of every sample of a dataset without loading images."""
import sys
from numbers import Integral
from typing import Any, Callable

import numpy as np
from mmengine.dataset import (ClassBalancedDataset, ConcatDataset,
                              RepeatDataset)


SINGLE_LABEL_HINT = ('ClassAwareBatchSampler needs a single-label dataset '
                     '(one integer class index per sample)')


def get_dataset_labels(dataset: Any) -> np.ndarray:
    """Get the class index of every sample of ``dataset``, images unread.

    Sources, in order of preference:

    1. mmengine's ``ConcatDataset``, ``RepeatDataset`` and
       ``ClassBalancedDataset`` are unwrapped and their children's labels
       concatenated, tiled or re-indexed (fast, and exact).
    2. ``dataset.get_gt_labels()`` (mmpretrain's ``BaseDataset`` and
       ``KFoldDataset``).
    3. ``dataset.get_cat_ids(i)`` for every index (one id per sample).
    4. ``dataset.get_data_info(i)['gt_label']`` for every index.

    A dataset built with ``lazy_init=True`` is fully initialised first
    (``full_init()``), which reads annotations but no image.

    Args:
        dataset (Any): A sized dataset following the mmengine / mmpretrain
            dataset interface.

    Returns:
        np.ndarray: int64 array of shape ``(len(dataset),)``; entry ``i`` is
        the class index of sample ``i``.

    Raises:
        ValueError: If ``dataset`` is empty, is multi-label, or carries no
            (or negative) labels.
    """
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    try:
        num_samples = len(dataset)
    except TypeError as err:
        raise ValueError(
            f'dataset must be sized, got {type(dataset)}') from err
    if num_samples == 0:
        raise ValueError('dataset is empty: there is nothing to sample')
    if _is_mmpretrain_multi_label(dataset):
        raise ValueError(f'dataset {type(dataset).__name__} is multi-label; '
                         f'{SINGLE_LABEL_HINT}')

    labels = _read_labels(dataset, num_samples)
    # mmengine's runner wraps the dataset in `_SlicedDataset` when
    # `num_batch_per_epoch` is set: it reports the shorter length but
    # forwards `get_gt_labels()` to the full dataset. Only indices below
    # len(dataset) are ever sampled, so the extra labels are dropped.
    if labels.shape[0] > num_samples:
        labels = labels[:num_samples]
    if labels.shape[0] < num_samples:
        raise ValueError(f'dataset {type(dataset).__name__} has '
                         f'{num_samples} samples but only {labels.shape[0]} '
                         'labels')
    if labels.min() < 0:
        bad = int(np.flatnonzero(labels < 0)[0])
        raise ValueError(
            f'dataset {type(dataset).__name__} has no label for sample {bad} '
            f'(gt_label={labels[bad]}); {SINGLE_LABEL_HINT}, every one >= 0')
    return labels


def _is_mmpretrain_multi_label(dataset: Any) -> bool:
    """Whether ``dataset`` is an mmpretrain ``MultiLabelDataset``.

    Looked up in ``sys.modules`` rather than imported: importing
    ``mmpretrain.datasets`` pulls in torchvision (about 1 s), and a dataset
    cannot be an instance of a class whose module was never loaded.
    """
    module = sys.modules.get('mmpretrain.datasets.multi_label')
    return module is not None and isinstance(dataset,
                                             module.MultiLabelDataset)


def _read_labels(dataset: Any, num_samples: int) -> np.ndarray:
    """Pick the cheapest label source of ``dataset`` (see the caller)."""
    if isinstance(dataset, ConcatDataset):
        return np.concatenate(
            [get_dataset_labels(child) for child in dataset.datasets])
    if isinstance(dataset, RepeatDataset):
        return np.tile(get_dataset_labels(dataset.dataset), dataset.times)
    if isinstance(dataset, ClassBalancedDataset):
        child_labels = get_dataset_labels(dataset.dataset)
        return child_labels[np.asarray(dataset.repeat_indices, np.int64)]

    ragged = None
    if callable(getattr(dataset, 'get_gt_labels', None)):
        try:
            return _labels_from_array(dataset,
                                      np.asarray(dataset.get_gt_labels()))
        except KeyError as err:
            # mmpretrain's BaseDataset.get_gt_labels indexes every sample's
            # 'gt_label' and raises KeyError for unlabelled annotations.
            raise ValueError(
                f'dataset {type(dataset).__name__} has no labels: '
                f'get_gt_labels() found no {err} in its samples; '
                f'{SINGLE_LABEL_HINT}') from err
        except ValueError as err:
            if 'inhomogeneous' not in str(err):
                raise
            # numpy >= 1.24 refuses to build an array from ragged per-sample
            # label lists (multi-label data); the per-sample readers below
            # name the first offending sample.
            ragged = err

    if callable(getattr(dataset, 'get_cat_ids', None)):
        return _labels_per_sample(dataset, num_samples, dataset.get_cat_ids,
                                  'get_cat_ids')
    if callable(getattr(dataset, 'get_data_info', None)):
        return _labels_per_sample(dataset, num_samples,
                                  lambda i: _gt_label_of(dataset, i),
                                  "get_data_info(i)['gt_label']")
    if ragged is not None:
        raise ValueError(
            f'dataset {type(dataset).__name__} is multi-label: '
            f'get_gt_labels() gives label lists of different lengths; '
            f'{SINGLE_LABEL_HINT}') from ragged
    raise ValueError(
        f'dataset {type(dataset).__name__} has no labels: it defines none of '
        "get_gt_labels(), get_cat_ids(i), get_data_info(i)['gt_label']; "
        f'{SINGLE_LABEL_HINT}')


def _gt_label_of(dataset: Any, index: int) -> Any:
    """Return ``dataset.get_data_info(index)['gt_label']`` or raise."""
    info = dataset.get_data_info(index)
    if not isinstance(info, dict) or 'gt_label' not in info:
        raise ValueError(
            f'dataset {type(dataset).__name__} has no labels: '
            f"get_data_info({index}) has no 'gt_label'; {SINGLE_LABEL_HINT}")
    return info['gt_label']


def _labels_per_sample(dataset: Any, num_samples: int,
                       read: Callable[[int], Any], source: str) -> np.ndarray:
    """Read one label per sample with ``read(i)`` and check each."""
    labels = np.empty(num_samples, dtype=np.int64)
    for i in range(num_samples):
        labels[i] = _single_label(dataset, read(i), f'{source} at index {i}')
    return labels


def _labels_from_array(dataset: Any, arr: np.ndarray) -> np.ndarray:
    """Convert the result of ``get_gt_labels()`` to a checked int64 array."""
    if arr.ndim == 1 and arr.dtype.kind in 'iu':
        return arr.astype(np.int64, copy=False)
    if arr.ndim == 0 or (arr.ndim >= 2 and arr[0].size != 1):
        raise ValueError(
            f'dataset {type(dataset).__name__} is multi-label or unlabelled: '
            f'get_gt_labels() has shape {arr.shape}; {SINGLE_LABEL_HINT}')
    # Object arrays (one list per sample), float labels or an (N, 1) array:
    # check sample by sample.
    return np.array([
        _single_label(dataset, value, f'get_gt_labels()[{i}]')
        for i, value in enumerate(arr)
    ], dtype=np.int64)


def _single_label(dataset: Any, value: Any, where: str) -> int:
    """Return ``value`` as one integer class index, or raise ValueError."""
    if isinstance(value, Integral):
        return int(value)
    if hasattr(value, 'detach'):  # a torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(
            f'dataset {type(dataset).__name__} is multi-label or unlabelled: '
            f'{where} holds {arr.size} labels ({value!r}); '
            f'{SINGLE_LABEL_HINT}')
    item = arr.reshape(()).item()
    if (isinstance(item, bool) or not isinstance(item, (int, float))
            or not float(item).is_integer()):
        raise ValueError(
            f'dataset {type(dataset).__name__} has a non-integer label '
            f'{item!r} ({where}); {SINGLE_LABEL_HINT}')
    return int(item)
