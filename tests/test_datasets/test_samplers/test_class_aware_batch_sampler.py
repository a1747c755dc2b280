"""Unit tests of ClassAwareBatchSampler, mmengine's sampler-test style.

Rank and world size are simulated by patching ``get_dist_info`` where
mmengine's samplers and ours import it; the distributed behaviour with real
gloo processes is in ``test_dist_class_aware.py``.
"""
import itertools
import math
import warnings
from contextlib import contextmanager
from unittest.mock import patch

import numpy as np
import pytest
from label_toys import GtLabelsArray, MMBakeToyLabels, imbalanced_labels
from mmengine.dataset import (ClassBalancedDataset, ConcatDataset,
                              DefaultSampler, InfiniteSampler, RepeatDataset)
from mmpretrain.datasets import KFoldDataset
from mmpretrain.registry import DATA_SAMPLERS

from mmbake.datasets import ClassAwareBatchSampler

OUR_MODULE = 'mmbake.datasets.samplers.class_aware_batch_sampler'
# LABELS below has a single-image class on purpose; its warning is checked
# in test_single_image_classes_warn_once_and_repeat_the_anchor.
pytestmark = pytest.mark.filterwarnings(
    'ignore:ClassAwareBatchSampler.*single image:UserWarning')


@contextmanager
def dist_env(rank: int = 0, world_size: int = 1):
    """Pretend to be ``rank`` of ``world_size`` for samplers built inside."""
    with patch('mmengine.dataset.sampler.get_dist_info',
               return_value=(rank, world_size)), \
            patch(f'{OUR_MODULE}.get_dist_info',
                  return_value=(rank, world_size)):
        yield


def build(labels,
          batch_size=8,
          num_instances=2,
          epoch_mode='images',
          rank=0,
          world_size=1,
          sampler_type=DefaultSampler,
          **sampler_kw):
    """A ClassAwareBatchSampler over a label-only dataset, as one rank."""
    dataset = labels if hasattr(labels, '__len__') and not isinstance(
        labels, (list, np.ndarray)) else GtLabelsArray(np.asarray(labels))
    sampler_kw.setdefault('seed', 0)
    with dist_env(rank, world_size):
        sampler = sampler_type(dataset, **sampler_kw)
        return ClassAwareBatchSampler(
            sampler, batch_size, num_instances, epoch_mode=epoch_mode)


def groups_of(batches, num_instances):
    """Reshape batches into rows of (anchor, mate, mate, ...)."""
    return np.asarray(batches).reshape(-1, num_instances)


LABELS = imbalanced_labels(203, 17)


# ---------------------------------------------------------------- building
def test_build_from_registry_like_the_runner():
    dataset = GtLabelsArray(LABELS)
    with dist_env():
        sampler = DefaultSampler(dataset, seed=3)
        batch_sampler = DATA_SAMPLERS.build(
            dict(type='ClassAwareBatchSampler', num_instances=4),
            default_args=dict(sampler=sampler, batch_size=16))
    assert isinstance(batch_sampler, ClassAwareBatchSampler)
    assert batch_sampler.sampler is sampler
    assert batch_sampler.anchors_per_batch == 4
    assert batch_sampler.seed == 3


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_instances=0), 'num_instances must be an int >= 1, got 0'),
    (dict(num_instances=2.0), 'num_instances must be an int'),
    (dict(batch_size=0), 'batch_size must be a positive int, got 0'),
    (dict(batch_size=True), 'batch_size must be a positive int'),
    (dict(batch_size=9, num_instances=2),
     r'batch_size \(9\) must be divisible by num_instances \(2\)'),
    (dict(epoch_mode='iters'),
     r"epoch_mode must be one of \('images', 'anchors'\), got 'iters'"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    args = dict(batch_size=8, num_instances=2)
    args.update(kwargs)
    with dist_env():
        sampler = DefaultSampler(GtLabelsArray(LABELS), seed=0)
        with pytest.raises(ValueError, match=match):
            ClassAwareBatchSampler(sampler, **args)


def test_sampler_without_dataset_is_refused():
    with pytest.raises(ValueError, match='sampler must be .* `dataset`'):
        ClassAwareBatchSampler(range(10), 8)


def test_multi_label_dataset_is_refused():
    dataset = GtLabelsArray(np.array([[0, 1], [1, 2]]))
    with dist_env():
        sampler = DefaultSampler(dataset, seed=0)
        with pytest.raises(ValueError, match='dataset.*multi-label'):
            ClassAwareBatchSampler(sampler, 4)


def test_seed_is_synced_when_the_sampler_has_none():

    class SeedlessSampler:

        def __init__(self, dataset):
            self.dataset = dataset

        def __iter__(self):
            return iter(range(len(self.dataset)))

    with patch(f'{OUR_MODULE}.sync_random_seed', return_value=1234):
        batch_sampler = ClassAwareBatchSampler(
            SeedlessSampler(GtLabelsArray(LABELS)), 8)
    assert batch_sampler.seed == 1234
    assert len(list(batch_sampler)) == len(batch_sampler)


# ------------------------------------------------------------ batch content
@pytest.mark.parametrize('num_instances', [1, 2, 3, 4])
def test_mates_share_the_anchor_class(num_instances):
    batch_size = 4 * num_instances
    batch_sampler = build(LABELS, batch_size, num_instances, 'anchors')
    batches = list(batch_sampler)
    assert all(len(batch) == batch_size for batch in batches)
    groups = groups_of(batches, num_instances)
    assert (LABELS[groups] == LABELS[groups[:, :1]]).all()

    sizes = np.bincount(LABELS)
    for group in groups:
        size = sizes[LABELS[group[0]]]
        anchor, mates = group[0], group[1:]
        if size == 1:
            # The single-image rule: the anchor is its own mate.
            assert (mates == anchor).all()
            continue
        assert anchor not in mates
        if size - 1 >= num_instances - 1:
            assert len(set(mates.tolist())) == len(mates)  # no replacement


def test_small_class_draws_with_replacement():
    # Class 1 has two images: with 3 mates per anchor the only other image
    # of the class is drawn three times.
    labels = np.array([1, 0, 0, 0, 0, 0, 1, 0])
    groups = groups_of(list(build(labels, 8, 4, 'anchors')), 4)
    for group in groups:
        if labels[group[0]] == 1:
            other = 6 if group[0] == 0 else 0
            assert group[1:].tolist() == [other] * 3


def test_single_image_classes_warn_once_and_repeat_the_anchor():
    labels = np.array([0, 1, 1, 2, 2, 2, 3, 4, 4])
    with pytest.warns(UserWarning, match=r'2 class\(es\).*\[0, 3\]') as rec:
        batch_sampler = build(labels, 4, 2, 'anchors')
    assert len(rec) == 1
    assert batch_sampler.singleton_classes == [0, 3]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        build(labels, 4, 2, 'anchors', rank=1, world_size=2)  # rank 0 warns
    groups = groups_of(list(batch_sampler), 2)
    for anchor, mate in groups:
        assert (mate == anchor) == (labels[anchor] in (0, 3))


def test_unshuffled_images_epochs_warn():
    """DefaultSampler(shuffle=False) in 'images' mode: the same first half
    of the order is the only anchors of every epoch."""
    labels = np.repeat(np.arange(4), 8)  # a class-sorted file
    with pytest.warns(UserWarning) as rec:
        batch_sampler = build(labels, 8, 2, 'images', shuffle=False)
    (warning, ) = [w for w in rec if 'does not shuffle' in str(w.message)]
    for part in ('DefaultSampler', "epoch_mode='images'", 'shuffle=True',
                 "epoch_mode='anchors'", 'first 1/2'):
        assert part in str(warning.message)
    anchors = {int(a) for a in groups_of(list(batch_sampler), 2)[:, 0]}
    assert {labels[a] for a in anchors} == {0, 1}  # classes 2, 3 never
    # Shuffled, in 'anchors' mode, or on another rank: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        build(labels, 8, 2, 'images', shuffle=True)
        build(labels, 8, 2, 'anchors', shuffle=False)
        build(labels, 8, 2, 'images', rank=1, world_size=2, shuffle=False)


def test_every_class_of_one_image():
    labels = np.arange(10)
    with pytest.warns(UserWarning, match='10 class'):
        groups = groups_of(list(build(labels, 6, 3, 'anchors')), 3)
    assert (groups == groups[:, :1]).all()


def test_mates_are_uniform_without_replacement():
    # One class of 5 images and anchor 0: every ordered choice of 3 mates
    # among the 4 others should be equally likely (24 permutations).
    labels = np.zeros(5, dtype=np.int64)
    batch_sampler = build(labels, 4, 4, 'anchors')
    anchors = np.zeros(24000, dtype=np.int64)
    rng = np.random.default_rng(7)
    mates = batch_sampler._draw_mates(anchors, rng)
    assert not (mates == 0).any()
    keys, counts = np.unique(mates, axis=0, return_counts=True)
    assert len(keys) == 24
    assert all(len(set(key)) == 3 for key in keys.tolist())
    # 1000 expected per permutation; 5 standard deviations is about 160.
    assert counts.min() > 840 and counts.max() < 1160


def test_sparse_and_large_class_ids():
    # Ids above 2**16 take the general sorting path; gaps are fine.
    labels = np.array([70000, 5, 70000, 5, 123456, 123456, 5, 2**40, 2**40])
    groups = groups_of(list(build(labels, 6, 3, 'anchors')), 3)
    assert (labels[groups] == labels[groups[:, :1]]).all()
    for group in groups:
        assert group[0] not in group[1:]


def test_anchor_groups_are_laid_out_in_order():
    labels = np.repeat(np.arange(5), 4)
    batch_sampler = build(labels, 8, 2, 'anchors', shuffle=False)
    batches = list(batch_sampler)
    anchors = groups_of(batches, 2)[:, 0]
    np.testing.assert_array_equal(anchors, np.arange(20))
    assert batches[0][0::2] == [0, 1, 2, 3]


# --------------------------------------------------------- anchors & epochs
def wrapped_order(batch_sampler):
    return list(batch_sampler.sampler)


@pytest.mark.parametrize('num_instances', [1, 2, 4])
def test_images_mode_takes_a_prefix_of_the_wrapped_order(num_instances):
    batch_sampler = build(LABELS, 8, num_instances, 'images')
    batches = list(batch_sampler)
    assert len(batches) == math.ceil(len(LABELS) / 8)
    anchors = groups_of(batches, num_instances)[:, 0].tolist()
    order = wrapped_order(batch_sampler)
    # With one instance an epoch needs slightly more anchors than the
    # sampler holds: its order restarts to fill the last batch.
    expected = list(itertools.islice(itertools.cycle(order), len(anchors)))
    assert anchors == expected


def test_anchors_mode_uses_every_index_as_anchor():
    batch_sampler = build(LABELS, 8, 2, 'anchors')
    batches = list(batch_sampler)
    assert len(batches) == math.ceil(len(LABELS) / 4)
    anchors = groups_of(batches, 2)[:, 0].tolist()
    order = wrapped_order(batch_sampler)
    assert anchors[:len(order)] == order
    # The last batch is padded from the start of the same order.
    assert anchors[len(order):] == order[:len(anchors) - len(order)]


def test_union_of_anchors_over_ranks_is_the_wrapped_indices():
    world_size = 3
    anchors, wrapped = [], []
    for rank in range(world_size):
        batch_sampler = build(LABELS, 6, 3, 'anchors', rank, world_size)
        order = wrapped_order(batch_sampler)
        rank_anchors = groups_of(list(batch_sampler), 3)[:, 0].tolist()
        assert rank_anchors[:len(order)] == order
        anchors += rank_anchors[:len(order)]
        wrapped += order
    assert sorted(anchors) == sorted(wrapped)
    assert set(anchors) == set(range(len(LABELS)))


@pytest.mark.parametrize('round_up', [True, False])
@pytest.mark.parametrize('epoch_mode', ['images', 'anchors'])
@pytest.mark.parametrize('num_samples, world_size', [(203, 1), (203, 2),
                                                     (203, 3), (203, 8),
                                                     (17, 4), (5, 8)])
def test_equal_lengths_across_ranks(num_samples, world_size, epoch_mode,
                                    round_up):
    labels = LABELS[:num_samples]
    lengths = set()
    for rank in range(world_size):
        batch_sampler = build(
            labels, 6, 2, epoch_mode, rank, world_size, round_up=round_up)
        batches = list(batch_sampler)
        assert len(batches) == len(batch_sampler)
        assert all(len(batch) == 6 for batch in batches)
        lengths.add(len(batches))
    assert len(lengths) == 1
    per_rank = math.ceil(num_samples / world_size)
    per_batch = 6 if epoch_mode == 'images' else 3
    assert lengths == {math.ceil(per_rank / per_batch)}


def test_rank_with_empty_share_still_yields_full_batches():
    # 3 images on 4 ranks without round-up: rank 3 gets nothing from
    # DefaultSampler but must still yield len() batches.
    labels = np.array([0, 0, 1])
    batch_sampler = build(labels, 4, 2, 'anchors', 3, 4, round_up=False)
    assert list(batch_sampler.sampler) == []
    batches = list(batch_sampler)
    assert len(batches) == len(batch_sampler) == 1
    assert groups_of(batches, 2)[:, 0].tolist() == [0, 1]


# ------------------------------------------------------- seeds and epochs
def test_same_seed_and_epoch_give_the_same_batches():
    first = list(build(LABELS, 8, 2, seed=11))
    again = list(build(LABELS, 8, 2, seed=11))
    assert first == again
    batch_sampler = build(LABELS, 8, 2, seed=11)
    assert list(batch_sampler) == list(batch_sampler) == first


def test_other_seed_gives_other_batches():
    assert list(build(LABELS, 8, 2,
                      seed=11)) != list(build(LABELS, 8, 2, seed=12))


def test_set_epoch_changes_the_batches_and_is_reproducible():
    batch_sampler = build(LABELS, 8, 2, 'anchors', seed=5)
    epochs = []
    for epoch in range(3):
        batch_sampler.sampler.set_epoch(epoch)
        epochs.append(list(batch_sampler))
    assert epochs[0] != epochs[1] != epochs[2]
    fresh = build(LABELS, 8, 2, 'anchors', seed=5)
    fresh.sampler.set_epoch(2)
    assert list(fresh) == epochs[2]


def test_mates_change_with_epoch_even_without_shuffle():
    batch_sampler = build(LABELS, 8, 2, 'anchors', shuffle=False)
    first = groups_of(list(batch_sampler), 2)
    batch_sampler.sampler.set_epoch(1)
    second = groups_of(list(batch_sampler), 2)
    np.testing.assert_array_equal(first[:, 0], second[:, 0])
    assert (first[:, 1] != second[:, 1]).any()


def test_ranks_draw_different_mates():
    labels = np.zeros(64, dtype=np.int64)
    rank0 = build(labels, 8, 2, 'anchors', 0, 2, shuffle=False)
    rank1 = build(labels, 8, 2, 'anchors', 1, 2, shuffle=False)
    assert rank0.seed == rank1.seed
    mates0 = groups_of(list(rank0), 2)[:, 1]
    mates1 = groups_of(list(rank1), 2)[:, 1]
    assert (mates0 != mates1).any()


def test_negative_seed_is_accepted():
    assert list(build(LABELS, 8, 2,
                      seed=-3)) != list(build(LABELS, 8, 2, seed=3))


# ------------------------------------------------------- InfiniteSampler
def test_infinite_sampler_never_stops_and_follows_its_order():
    batch_sampler = build(
        LABELS, 8, 2, rank=1, world_size=2, sampler_type=InfiniteSampler)
    assert len(batch_sampler) == math.ceil(math.ceil(203 / 2) / 8)
    # Three epochs' worth, past the end of the sampler's first permutation.
    batches = list(itertools.islice(iter(batch_sampler), 40))
    groups = groups_of(batches, 2)
    assert (LABELS[groups[:, 0]] == LABELS[groups[:, 1]]).all()

    reference = build(
        LABELS, 8, 2, rank=1, world_size=2, sampler_type=InfiniteSampler)
    expected = list(itertools.islice(iter(reference.sampler), len(groups)))
    assert groups[:, 0].tolist() == expected


def test_infinite_sampler_is_reproducible():
    first = build(LABELS, 8, 2, sampler_type=InfiniteSampler, seed=9)
    again = build(LABELS, 8, 2, sampler_type=InfiniteSampler, seed=9)
    assert list(itertools.islice(iter(first), 70)) == list(
        itertools.islice(iter(again), 70))


# ----------------------------------------------------- dataset wrappers
DATASET_LABELS = [3, 0, 1, 1, 2, 0, 3, 3, 1, 2, 0, 2, 3, 1]


def wrapped_datasets():
    base = dict(type='MMBakeToyLabels', labels=DATASET_LABELS)
    return {
        'BaseDataset':
        lambda: MMBakeToyLabels(DATASET_LABELS),
        'lazy_init':
        lambda: MMBakeToyLabels(DATASET_LABELS, lazy_init=True),
        'ConcatDataset':
        lambda: ConcatDataset(
            [MMBakeToyLabels(DATASET_LABELS),
             MMBakeToyLabels([1, 2, 3, 0])],
            lazy_init=True),
        'RepeatDataset':
        lambda: RepeatDataset(MMBakeToyLabels(DATASET_LABELS), times=3),
        'ClassBalancedDataset':
        lambda: ClassBalancedDataset(
            MMBakeToyLabels(DATASET_LABELS + [4]), oversample_thr=0.2),
        'KFoldDataset':
        lambda: KFoldDataset(
            dict(base, lazy_init=True), fold=0, num_splits=3, seed=0),
    }


@pytest.mark.parametrize('name', list(wrapped_datasets()))
def test_dataset_wrappers(name):
    dataset = wrapped_datasets()[name]()
    batch_sampler = build(dataset, 6, 3, 'anchors', world_size=2, rank=1)
    batches = list(batch_sampler)
    assert len(batches) == len(batch_sampler)
    truth = np.array([
        int(dataset.get_data_info(i)['gt_label']) for i in range(len(dataset))
    ])
    groups = groups_of(batches, 3)
    assert (truth[groups] == truth[groups[:, :1]]).all()
    assert groups.max() < len(dataset)
