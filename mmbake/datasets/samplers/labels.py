"""Read the class label of every sample of a dataset without loading images."""
import sys
from numbers import Integral
from typing import Any

import numpy as np
from mmengine.dataset import ClassBalancedDataset, ConcatDataset, RepeatDataset

SINGLE_LABEL_HINT = ('ClassAwareBatchSampler needs a single-label dataset '
                     '(one integer class index per sample)')


def get_dataset_labels(dataset: Any) -> np.ndarray:
    """Get the class index of every sample of ``dataset``, images unread.

    Sources, in order of preference: mmengine's ``ConcatDataset``,
    ``RepeatDataset`` and ``ClassBalancedDataset`` are unwrapped (their
    children's labels concatenated, tiled or re-indexed); then
    ``dataset.get_gt_labels()`` (mmpretrain's ``BaseDataset``,
    ``KFoldDataset``); then ``get_data_info(i)['gt_label']`` or
    ``get_cat_ids(i)`` for every index. Multi-label data is told apart by
    its type (mmpretrain's ``MultiLabelDataset``) or by a sample holding
    more than one label. A dataset built with ``lazy_init=True`` is fully
    initialised first, which reads annotations but no image.

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
    if not hasattr(dataset, '__len__'):
        raise ValueError(f'dataset must be sized, got {type(dataset)}')
    num_samples, name = len(dataset), type(dataset).__name__
    if num_samples == 0:
        raise ValueError('dataset is empty: there is nothing to sample')
    # Looked up, not imported (mmpretrain.datasets imports torchvision, 1 s):
    # no dataset is an instance of a class whose module was never loaded.
    multi_label = sys.modules.get('mmpretrain.datasets.multi_label')
    if multi_label and isinstance(dataset, multi_label.MultiLabelDataset):
        raise ValueError(f'dataset {name} is multi-label; {SINGLE_LABEL_HINT}')

    # mmengine's runner wraps the dataset in `_SlicedDataset` for
    # `num_batch_per_epoch`: shorter, its `get_gt_labels()` is still the full
    # dataset's. Indices beyond its length are never sampled: drop them.
    labels = _read_labels(dataset, name, num_samples)[:num_samples]
    if labels.shape[0] < num_samples:
        raise ValueError(f'dataset {name} has {num_samples} samples but only '
                         f'{labels.shape[0]} labels')
    if labels.min() < 0:
        bad = int(np.flatnonzero(labels < 0)[0])
        raise ValueError(
            f'dataset {name} has no label for sample {bad} '
            f'(gt_label={labels[bad]}); {SINGLE_LABEL_HINT}, every one >= 0')
    return labels


def _read_labels(dataset: Any, name: str, num_samples: int) -> np.ndarray:
    """Read the labels from the cheapest source (see the caller)."""
    if isinstance(dataset, ConcatDataset):
        return np.concatenate(
            [get_dataset_labels(child) for child in dataset.datasets])
    if isinstance(dataset, RepeatDataset):
        return np.tile(get_dataset_labels(dataset.dataset), dataset.times)
    if isinstance(dataset, ClassBalancedDataset):
        return get_dataset_labels(dataset.dataset)[dataset.repeat_indices]

    values, where = None, 'get_gt_labels()[{}]'
    if callable(getattr(dataset, 'get_gt_labels', None)):
        try:
            values = dataset.get_gt_labels()
        except (KeyError, ValueError):
            # mmpretrain's BaseDataset.get_gt_labels() stacks the samples'
            # 'gt_label': KeyError where one has none, ValueError where
            # label lists differ in length. Read the samples one by one.
            pass
        if isinstance(values, np.ndarray) and values.ndim == 1 and \
                values.dtype.kind in 'iu':
            return values.astype(np.int64, copy=False)
    indices = range(num_samples)
    if values is None and callable(getattr(dataset, 'get_data_info', None)):
        values = (
            d.get('gt_label', []) for d in map(dataset.get_data_info, indices))
        where = "get_data_info({})['gt_label']"
    elif values is None and callable(getattr(dataset, 'get_cat_ids', None)):
        values, where = map(dataset.get_cat_ids, indices), 'get_cat_ids({})'
    elif values is None:
        raise ValueError(
            f'dataset {name} has no labels: it defines none of '
            "get_gt_labels(), get_cat_ids(i), get_data_info(i)['gt_label']; "
            f'{SINGLE_LABEL_HINT}')
    # Anything but an array of integers: checked label by label.
    labels = [
        _single_label(name, v, where.format(i)) for i, v in enumerate(values)
    ]
    return np.array(labels, dtype=np.int64)


def _single_label(name: str, value: Any, where: str) -> int:
    """``value`` as one class index, or a ValueError naming the source."""
    if isinstance(value, Integral):
        return int(value)
    if hasattr(value, 'detach'):  # a torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.size != 1:
        problem = 'is multi-label' if arr.size else 'has no label'
        raise ValueError(f'dataset {name} {problem}: {where} holds {arr.size} '
                         f'labels ({value!r}); {SINGLE_LABEL_HINT}')
    item = arr.reshape(()).item()
    if (isinstance(item, bool) or not isinstance(item, (int, float))
            or not float(item).is_integer()):
        raise ValueError(f'dataset {name} has a non-integer label {item!r} '
                         f'({where}); {SINGLE_LABEL_HINT}')
    return int(item)
