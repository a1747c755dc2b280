"""Tests of ``get_dataset_labels``: every label source and wrapper."""
import numpy as np
import pytest
import torch
from label_toys import LabelsOnly, MMBakeToyLabels, ToyMultiLabels
from mmengine.dataset import ClassBalancedDataset, ConcatDataset, RepeatDataset
from mmengine.runner.runner import _SlicedDataset
from mmpretrain.datasets import KFoldDataset

from mmbake.datasets import get_dataset_labels

LABELS_A = [3, 0, 1, 1, 2, 0, 3, 3, 1]
LABELS_B = [2, 3, 0, 1, 3]

# Each wrapper of mmengine and mmpretrain, eagerly and lazily built
# (KFoldDataset: the flag is test_mode, the other half of the split).
DATASETS = {
    'BaseDataset':
    lambda lazy: MMBakeToyLabels(LABELS_A, lazy_init=lazy),
    'ConcatDataset':
    lambda lazy: ConcatDataset(
        [MMBakeToyLabels(LABELS_A),
         MMBakeToyLabels(LABELS_B)], lazy_init=lazy),
    'RepeatDataset':
    lambda lazy: RepeatDataset(
        MMBakeToyLabels(LABELS_B, lazy_init=lazy), times=3, lazy_init=lazy),
    # Class 2 is rare (1 of 9 images): it is repeated by the wrapper.
    'ClassBalancedDataset':
    lambda lazy: ClassBalancedDataset(
        MMBakeToyLabels(LABELS_A), oversample_thr=0.5, lazy_init=lazy),
    'KFoldDataset':
    lambda lazy: KFoldDataset(
        dict(type='MMBakeToyLabels', labels=LABELS_A, lazy_init=True),
        fold=1,
        num_splits=3,
        test_mode=lazy,
        seed=1),
}


@pytest.mark.parametrize('lazy', [False, True])
@pytest.mark.parametrize('name', list(DATASETS))
def test_wrappers_agree_with_reading_one_by_one(name, lazy):
    dataset = DATASETS[name](lazy)
    labels = get_dataset_labels(dataset)
    # lazy_init datasets are initialised, which reads no image.
    assert labels.dtype == np.int64 and len(labels) == len(dataset)
    np.testing.assert_array_equal(labels, [
        int(dataset.get_data_info(i)['gt_label']) for i in range(len(dataset))
    ])
    if name == 'ConcatDataset':
        np.testing.assert_array_equal(labels, LABELS_A + LABELS_B)
    if name == 'RepeatDataset':
        np.testing.assert_array_equal(labels, LABELS_B * 3)
    if name == 'ClassBalancedDataset':
        assert len(labels) > len(LABELS_A)


def test_other_sources():
    cat_ids = LabelsOnly([[label] for label in LABELS_A], 'get_cat_ids')
    np.testing.assert_array_equal(get_dataset_labels(cat_ids), LABELS_A)
    for wrap in (int, np.int64, np.array, torch.tensor, lambda x: [x], float):
        infos = [dict(gt_label=wrap(label)) for label in LABELS_A]
        np.testing.assert_array_equal(
            get_dataset_labels(LabelsOnly(infos, 'get_data_info')), LABELS_A)
    # mmengine's runner wraps the dataset for `num_batch_per_epoch`; its
    # get_gt_labels() still answers for the whole dataset.
    dataset = _SlicedDataset(MMBakeToyLabels(LABELS_A), 5)
    np.testing.assert_array_equal(get_dataset_labels(dataset), LABELS_A[:5])


@pytest.mark.parametrize(
    'dataset',
    [
        ToyMultiLabels([[0, 1], [2], [1]]),
        LabelsOnly([[0], [0, 2]], 'get_cat_ids'),
        LabelsOnly([dict(gt_label=1), dict(gt_label=[1, 2])], 'get_data_info'),
        LabelsOnly(np.array([[0, 1], [1, 0]])),
        LabelsOnly([[0, 1], [1]]),
        # A BaseDataset (not multi-label) whose get_gt_labels() raises.
        MMBakeToyLabels([[0, 1], [1]]),
        ConcatDataset([MMBakeToyLabels([0, 2, 1]),
                       ToyMultiLabels([[0, 1]])]),
    ],
    ids=[
        'MultiLabelDataset', 'get_cat_ids', 'get_data_info', 'get_gt_labels',
        'get_gt_labels-ragged', 'BaseDataset-ragged', 'ConcatDataset'
    ])
def test_multi_label_is_refused(dataset):
    with pytest.raises(ValueError, match='dataset.*multi-label'):
        get_dataset_labels(dataset)


@pytest.mark.parametrize(
    'dataset', [
        LabelsOnly([1, 2, 3], 'no_interface'),
        LabelsOnly([dict(img_path='a.png')], 'get_data_info'),
        MMBakeToyLabels([0, None]),
        LabelsOnly([dict(gt_label=0), dict(gt_label=-1)], 'get_data_info'),
        LabelsOnly([[0], []], 'get_cat_ids'),
    ],
    ids=[
        'no-interface', 'no-gt_label', 'BaseDataset-no-gt_label', 'negative',
        'empty-cat-ids'
    ])
def test_missing_labels_are_refused(dataset):
    with pytest.raises(ValueError, match='dataset .* has no label'):
        get_dataset_labels(dataset)


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match='dataset must be sized'):
        get_dataset_labels(object())
    with pytest.raises(ValueError, match='dataset is empty'):
        get_dataset_labels(LabelsOnly(np.array([], dtype=np.int64)))
    for label in (1.5, 'cat'):
        with pytest.raises(ValueError, match='non-integer label'):
            get_dataset_labels(
                LabelsOnly([dict(gt_label=label)], 'get_data_info'))
