"""Small real datasets with known labels, shared by the sampler tests.

Not a test module: imported by the tests in this folder (pytest puts the
folder on ``sys.path``) and by the distributed worker script.
"""
from typing import List, Sequence

import numpy as np
from mmpretrain.datasets import BaseDataset, MultiLabelDataset
from mmpretrain.registry import DATASETS


@DATASETS.register_module(force=True)
class MMBakeToyLabels(BaseDataset):
    """An mmpretrain dataset whose annotations are the given labels.

    Args:
        labels (Sequence[int]): The class index of every sample.
        **kwargs: Passed to mmpretrain's ``BaseDataset`` (e.g. lazy_init).
    """

    def __init__(self, labels: Sequence[int], **kwargs) -> None:
        self._labels = [int(label) for label in labels]
        num_classes = max(self._labels) + 1 if self._labels else 1
        super().__init__(
            ann_file='',
            metainfo=dict(classes=[f'c{i}' for i in range(num_classes)]),
            **kwargs)

    def load_data_list(self) -> List[dict]:
        """One annotation per label; no image is ever read."""
        return [
            dict(img_path=f'img_{i}.png', gt_label=label)
            for i, label in enumerate(self._labels)
        ]


class ToyMultiLabels(MultiLabelDataset):
    """mmpretrain's multi-label dataset with fixed label lists."""

    def __init__(self, label_lists: Sequence[Sequence[int]]) -> None:
        self._label_lists = [list(labels) for labels in label_lists]
        super().__init__(
            ann_file='', metainfo=dict(classes=['c0', 'c1', 'c2']))

    def load_data_list(self) -> List[dict]:
        """One annotation per label list."""
        return [
            dict(img_path=f'img_{i}.png', gt_label=labels)
            for i, labels in enumerate(self._label_lists)
        ]


class CatIdsOnly:
    """A dataset that exposes its labels only through ``get_cat_ids``."""

    def __init__(self, cat_ids: Sequence[Sequence[int]]) -> None:
        self._cat_ids = [list(ids) for ids in cat_ids]

    def __len__(self) -> int:
        return len(self._cat_ids)

    def get_cat_ids(self, idx: int) -> List[int]:
        return self._cat_ids[idx]


class DataInfoOnly:
    """A dataset that exposes its labels only through ``get_data_info``."""

    def __init__(self, infos: Sequence[dict]) -> None:
        self._infos = list(infos)

    def __len__(self) -> int:
        return len(self._infos)

    def get_data_info(self, idx: int) -> dict:
        return dict(self._infos[idx])


class GtLabelsArray:
    """A dataset whose ``get_gt_labels`` returns ready labels (fast)."""

    def __init__(self, labels) -> None:
        # An array, or a list kept as given (e.g. ragged label lists).
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def get_gt_labels(self) -> np.ndarray:
        return self.labels


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
