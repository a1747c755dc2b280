"""Small datasets with known labels, shared by the sampler tests.

Not a test module: imported by the tests in this folder (pytest puts the
folder on ``sys.path``), also in their gloo ranks.
"""
from typing import List, Sequence

import numpy as np
from mmpretrain.datasets import BaseDataset, MultiLabelDataset
from mmpretrain.registry import DATASETS


@DATASETS.register_module(force=True)
class MMBakeToyLabels(BaseDataset):
    """An mmpretrain dataset whose annotations are the given labels (one
    int, or a list, per sample; None: no ``gt_label``); no image is read.

    Args:
        labels (Sequence): The ``gt_label`` of every sample.
        **kwargs: Passed to mmpretrain's ``BaseDataset`` (e.g. lazy_init).
    """

    def __init__(self, labels: Sequence, **kwargs) -> None:
        self._labels = list(labels)
        super().__init__(
            ann_file='', metainfo=dict(classes=['c'] * 10), **kwargs)

    def load_data_list(self) -> List[dict]:
        return [
            dict(
                img_path=f'{i}.png', **({} if y is None else dict(gt_label=y)))
            for i, y in enumerate(self._labels)
        ]


class ToyMultiLabels(MultiLabelDataset):
    """mmpretrain's multi-label dataset with fixed label lists."""

    load_data_list = MMBakeToyLabels.load_data_list

    def __init__(self, label_lists: Sequence[Sequence[int]]) -> None:
        self._labels = list(label_lists)
        super().__init__(ann_file='', metainfo=dict(classes=['c'] * 10))


class LabelsOnly:
    """A sized dataset with one label interface, answered from ``data``:
    ``get_gt_labels()`` (``data`` as given, e.g. an array), or
    ``get_cat_ids(i)`` / ``get_data_info(i)`` (``data[i]``)."""

    def __init__(self, data, interface: str = 'get_gt_labels') -> None:
        self.data = data
        setattr(self, interface, (lambda: data)
                if interface == 'get_gt_labels' else data.__getitem__)

    def __len__(self) -> int:
        return len(self.data)


def imbalanced_labels(num_samples: int,
                      num_classes: int,
                      seed: int = 0) -> np.ndarray:
    """Labels with uneven class sizes: big classes, small ones, singletons.

    Class 0 holds one image, class 1 two and class 2 three, so that the
    with-replacement and single-image rules are always exercised; the rest
    are drawn with skewed frequencies.
    """
    rng = np.random.default_rng(seed)
    fixed = np.array([0, 1, 1, 2, 2, 2])
    weights = np.arange(3, num_classes, dtype=float)**-1.0
    rest = rng.choice(
        np.arange(3, num_classes),
        size=num_samples - fixed.size,
        p=weights / weights.sum())
    labels = np.concatenate([fixed, rest])
    rng.shuffle(labels)
    return labels.astype(np.int64)
