"""Tests of ``get_dataset_labels``: every label source and wrapper."""
import numpy as np
import pytest
import torch
from label_toys import (CatIdsOnly, DataInfoOnly, GtLabelsArray,
                        MMBakeToyLabels, ToyMultiLabels)
from mmengine.dataset import ClassBalancedDataset, ConcatDataset, RepeatDataset
from mmengine.runner.runner import _SlicedDataset
from mmpretrain.datasets import BaseDataset, KFoldDataset

from mmbake.datasets import get_dataset_labels

LABELS_A = [3, 0, 1, 1, 2, 0, 3, 3, 1]
LABELS_B = [2, 3, 0, 1, 3]


def labels_one_by_one(dataset):
    """The ground truth, read the slow way through ``get_data_info``."""
    return np.array([
        int(dataset.get_data_info(i)['gt_label']) for i in range(len(dataset))
    ])


def test_mmpretrain_dataset():
    labels = get_dataset_labels(MMBakeToyLabels(LABELS_A))
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, LABELS_A)


def test_lazy_init_is_initialised_without_loading_images():
    dataset = MMBakeToyLabels(LABELS_A, lazy_init=True)
    assert not dataset._fully_initialized
    np.testing.assert_array_equal(get_dataset_labels(dataset), LABELS_A)
    assert dataset._fully_initialized


@pytest.mark.parametrize('lazy', [False, True])
def test_concat_dataset(lazy):
    dataset = ConcatDataset(
        [MMBakeToyLabels(LABELS_A),
         MMBakeToyLabels(LABELS_B)], lazy_init=lazy)
    labels = get_dataset_labels(dataset)
    np.testing.assert_array_equal(labels, LABELS_A + LABELS_B)
    np.testing.assert_array_equal(labels, labels_one_by_one(dataset))


@pytest.mark.parametrize('lazy', [False, True])
def test_repeat_dataset(lazy):
    dataset = RepeatDataset(
        MMBakeToyLabels(LABELS_B, lazy_init=lazy), times=3, lazy_init=lazy)
    labels = get_dataset_labels(dataset)
    np.testing.assert_array_equal(labels, LABELS_B * 3)
    np.testing.assert_array_equal(labels, labels_one_by_one(dataset))


@pytest.mark.parametrize('lazy', [False, True])
def test_class_balanced_dataset(lazy):
    # Class 2 is rare (1 of 9 images): it is repeated by the wrapper.
    dataset = ClassBalancedDataset(
        MMBakeToyLabels(LABELS_A), oversample_thr=0.5, lazy_init=lazy)
    labels = get_dataset_labels(dataset)
    assert len(labels) == len(dataset) > len(LABELS_A)
    np.testing.assert_array_equal(labels, labels_one_by_one(dataset))


@pytest.mark.parametrize('test_mode', [False, True])
def test_kfold_dataset(test_mode):
    dataset = KFoldDataset(
        dict(type='MMBakeToyLabels', labels=LABELS_A, lazy_init=True),
        fold=1,
        num_splits=3,
        test_mode=test_mode,
        seed=1)
    labels = get_dataset_labels(dataset)
    assert len(labels) == len(dataset)
    np.testing.assert_array_equal(labels, labels_one_by_one(dataset))


def test_get_cat_ids_source():
    dataset = CatIdsOnly([[label] for label in LABELS_A])
    np.testing.assert_array_equal(get_dataset_labels(dataset), LABELS_A)


@pytest.mark.parametrize('wrap', [
    int, np.int64, lambda x: np.array(x), lambda x: torch.tensor(x),
    lambda x: [x], lambda x: float(x)
])
def test_get_data_info_source(wrap):
    dataset = DataInfoOnly([dict(gt_label=wrap(label)) for label in LABELS_A])
    np.testing.assert_array_equal(get_dataset_labels(dataset), LABELS_A)


def test_sliced_dataset_of_runner_keeps_its_length():
    # mmengine's runner wraps the dataset for `num_batch_per_epoch`; its
    # get_gt_labels() still answers for the whole dataset.
    dataset = _SlicedDataset(MMBakeToyLabels(LABELS_A), 5)
    np.testing.assert_array_equal(get_dataset_labels(dataset), LABELS_A[:5])


class LabelListsBase(BaseDataset):
    """An mmpretrain ``BaseDataset`` (not a MultiLabelDataset) with label
    lists of different lengths: its ``get_gt_labels()`` raises."""

    load_data_list = ToyMultiLabels.load_data_list

    def __init__(self, label_lists) -> None:
        self._label_lists = [list(labels) for labels in label_lists]
        super().__init__(ann_file='', metainfo=dict(classes=['c0', 'c1']))


MULTI_LABEL_DATASETS = {
    'MultiLabelDataset':
    lambda: ToyMultiLabels([[0, 1], [2], [1]]),
    'get_cat_ids':
    lambda: CatIdsOnly([[0], [0, 2]]),
    'get_data_info':
    lambda: DataInfoOnly([dict(gt_label=1),
                          dict(gt_label=[1, 2])]),
    'get_gt_labels':
    lambda: GtLabelsArray(np.array([[0, 1], [1, 0]])),
    'get_gt_labels-ragged':
    lambda: GtLabelsArray([[0, 1], [1]]),
    'BaseDataset-ragged':
    lambda: LabelListsBase([[0, 1], [1]]),
    'ConcatDataset':
    lambda: ConcatDataset(
        [MMBakeToyLabels([0, 2, 1]),
         ToyMultiLabels([[0, 1]])]),
}


@pytest.mark.parametrize('name', list(MULTI_LABEL_DATASETS))
def test_multi_label_is_refused(name):
    with pytest.raises(ValueError, match='dataset.*multi-label'):
        get_dataset_labels(MULTI_LABEL_DATASETS[name]())


class OnlyLength:
    """A sized dataset with no label interface at all."""

    def __len__(self) -> int:
        return 3


@pytest.mark.parametrize(
    'dataset', [
        OnlyLength(),
        DataInfoOnly([dict(img_path='a.png')]),
        DataInfoOnly([dict(gt_label=0), dict(gt_label=-1)]),
        CatIdsOnly([[0], []]),
    ],
    ids=['no-interface', 'no-gt_label', 'negative', 'empty-cat-ids'])
def test_missing_labels_are_refused(dataset):
    with pytest.raises(ValueError, match='dataset.*(no label|unlabelled)'):
        get_dataset_labels(dataset)


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match='dataset must be sized'):
        get_dataset_labels(object())
    with pytest.raises(ValueError, match='dataset is empty'):
        get_dataset_labels(GtLabelsArray(np.array([], dtype=np.int64)))
    with pytest.raises(ValueError, match='non-integer label 1.5'):
        get_dataset_labels(DataInfoOnly([dict(gt_label=1.5)]))
    with pytest.raises(ValueError, match='non-integer label'):
        get_dataset_labels(DataInfoOnly([dict(gt_label='cat')]))
