"""Unit tests of ClassAwareBatchSampler, mmengine's sampler-test style.

Rank and world size are simulated by patching ``get_dist_info`` where
mmengine's samplers and ours import it; real gloo ranks are in
``test_dist_class_aware.py``, the real runner in
``test_runner_class_aware.py``.
"""
import hashlib
import itertools
import math
import warnings
from contextlib import contextmanager
from unittest.mock import patch

import numpy as np
import pytest
from label_toys import LabelsOnly, imbalanced_labels
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmpretrain.registry import DATA_SAMPLERS

from mmbake.datasets import ClassAwareBatchSampler

OUR_MODULE = 'mmbake.datasets.samplers.class_aware_batch_sampler'
# LABELS below has a single-image class on purpose; its warning is checked
# in test_single_image_classes_warn_once_on_rank_0.
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
    sampler_kw.setdefault('seed', 0)
    with dist_env(rank, world_size):
        sampler = sampler_type(LabelsOnly(np.asarray(labels)), **sampler_kw)
        return ClassAwareBatchSampler(
            sampler, batch_size, num_instances, epoch_mode=epoch_mode)


def groups_of(batches, num_instances):
    """Reshape batches into rows of (anchor, mate, mate, ...)."""
    return np.asarray(batches).reshape(-1, num_instances)


LABELS = imbalanced_labels(203, 17)


def test_build_like_the_runner():
    dataset = LabelsOnly(LABELS)
    with dist_env():
        sampler = DefaultSampler(dataset, seed=3)
        batch_sampler = DATA_SAMPLERS.build(
            dict(type='ClassAwareBatchSampler', num_instances=4),
            default_args=dict(sampler=sampler, batch_size=16))
    assert isinstance(batch_sampler, ClassAwareBatchSampler)
    assert batch_sampler.sampler is sampler
    assert (batch_sampler.anchors_per_batch, batch_sampler.seed) == (4, 3)

    class SeedlessSampler:

        def __init__(self):
            self.dataset = dataset

        def __iter__(self):
            return iter(range(len(dataset)))

    # No seed: one (collective) sync_random_seed() gives it.
    with patch(f'{OUR_MODULE}.sync_random_seed', return_value=1234):
        batch_sampler = ClassAwareBatchSampler(SeedlessSampler(), 8)
    assert batch_sampler.seed == 1234
    assert len(list(batch_sampler)) == len(batch_sampler)
    with pytest.raises(ValueError, match='sampler must be .* `dataset`'):
        ClassAwareBatchSampler(range(10), 8)


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_instances=0), 'num_instances must be an int >= 1, got 0'),
    (dict(num_instances=2.0), 'num_instances must be an int >= 1'),
    (dict(batch_size=0), 'batch_size must be an int >= 1, got 0'),
    (dict(batch_size=True), 'batch_size must be an int >= 1'),
    (dict(batch_size=9),
     r'batch_size \(9\) must be divisible by num_instances \(2\)'),
    (dict(epoch_mode='iters'),
     r"epoch_mode must be one of \('images', 'anchors'\), got 'iters'"),
    (dict(labels=[[0, 1], [1, 2]]), 'dataset.*multi-label'),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(kwargs.pop('labels', LABELS), **kwargs)


def test_unshuffled_images_epochs_are_refused():
    """In 'images' mode the first 1/num_instances of the wrapped order are
    the anchors: unshuffled, the same images every epoch. Every rank raises
    (test_dist_class_aware.py)."""
    with pytest.raises(ValueError) as error:
        build(LABELS, 8, 2, 'images', 1, 2, shuffle=False)
    for part in ('ClassAwareBatchSampler', 'DefaultSampler', 'shuffle=False',
                 "epoch_mode='images'", 'first 1/2', 'shuffle=True',
                 "epoch_mode='anchors'"):
        assert part in str(error.value)
    # Shuffled, 'anchors' mode, plain batches or an InfiniteSampler: fine.
    build(LABELS, 8, 2, 'images', shuffle=True)
    build(LABELS, 8, 2, 'anchors', shuffle=False)
    build(LABELS, 8, 1, 'images', shuffle=False)
    build(LABELS, 8, 2, sampler_type=InfiniteSampler, shuffle=False)


@pytest.mark.parametrize(
    'labels, num_instances',
    [(LABELS, 1), (LABELS, 2), (LABELS, 3), (LABELS, 4),
     (np.array([1, 0, 0, 0, 0, 0, 1, 0]), 4), (np.arange(10), 3),
     (np.array([70000, 5, 70000, 5, 123456, 123456, 5, 2**40, 2**40]), 3)],
    ids=['1', '2', '3', '4', 'class-of-2', 'all-single', 'large-ids'])
def test_mates_share_the_anchor_class(labels, num_instances):
    """Also: class 1 of 'class-of-2' has two images, so its three mates
    repeat the other one; ids above 2**16 take numpy's general sort."""
    batch_size = 2 * num_instances
    batches = list(build(labels, batch_size, num_instances, 'anchors'))
    assert all(len(batch) == batch_size for batch in batches)
    groups = groups_of(batches, num_instances)
    assert (labels[groups] == labels[groups[:, :1]]).all()
    _, classes, sizes = np.unique(
        labels, return_inverse=True, return_counts=True)
    for anchor, *mates in groups.tolist():
        size = sizes[classes[anchor]]
        if size == 1:  # the single-image rule: the anchor is its own mate
            assert mates == [anchor] * len(mates)
            continue
        assert anchor not in mates
        if size >= num_instances:  # enough images: no replacement
            assert len(set(mates)) == len(mates)


def test_single_image_classes_warn_once_on_rank_0():
    labels = np.array([0, 1, 1, 2, 2, 2, 3, 4, 4])
    with pytest.warns(UserWarning, match=r'2 class\(es\).*\[0, 3\]') as rec:
        batch_sampler = build(labels, 4, 2, 'anchors')
    assert len(rec) == 1 and batch_sampler.singleton_classes == [0, 3]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        build(labels, 4, 2, 'anchors', rank=1, world_size=2)


def test_mates_are_uniform_without_replacement():
    # One class of 5 images and anchor 0: every ordered choice of 3 mates
    # among the 4 others should be equally likely (24 permutations).
    batch_sampler = build(np.zeros(5, dtype=np.int64), 4, 4, 'anchors')
    mates = batch_sampler._draw_mates(
        np.zeros(24000, dtype=np.int64), np.random.default_rng(7))
    keys, counts = np.unique(mates, axis=0, return_counts=True)
    assert len(keys) == 24 and not (mates == 0).any()
    assert all(len(set(key)) == 3 for key in keys.tolist())
    # 1000 expected per permutation; 5 standard deviations is about 160.
    assert counts.min() > 840 and counts.max() < 1160


def test_anchors_in_order_and_mates_change_with_epoch():
    batch_sampler = build(
        np.repeat(np.arange(5), 4), 8, 2, 'anchors', shuffle=False)
    first = groups_of(list(batch_sampler), 2)
    np.testing.assert_array_equal(first[:, 0], np.arange(20))
    batch_sampler.sampler.set_epoch(1)
    second = groups_of(list(batch_sampler), 2)
    np.testing.assert_array_equal(second[:, 0], first[:, 0])
    assert (first[:, 1] != second[:, 1]).any()


@pytest.mark.parametrize('epoch_mode, num_instances', [('images', 1),
                                                       ('images', 2),
                                                       ('images', 4),
                                                       ('anchors', 2)])
def test_anchors_follow_the_wrapped_order(epoch_mode, num_instances):
    batch_sampler = build(LABELS, 8, num_instances, epoch_mode)
    batches = list(batch_sampler)
    per_batch = 8 if epoch_mode == 'images' else 8 // num_instances
    assert len(batches) == math.ceil(len(LABELS) / per_batch)
    anchors = groups_of(batches, num_instances)[:, 0].tolist()
    # Restarted where an epoch needs more anchors than the order holds
    # (one instance; the last batch of 'anchors' mode).
    order = itertools.cycle(batch_sampler.sampler)
    assert anchors == list(itertools.islice(order, len(anchors)))


@pytest.mark.parametrize('num_samples, world_size', [(203, 1), (203, 3),
                                                     (203, 8), (17, 4),
                                                     (5, 8)])
def test_every_rank_yields_len_full_batches(num_samples, world_size):
    for epoch_mode, round_up in itertools.product(('images', 'anchors'),
                                                  (True, False)):
        per_batch = 6 if epoch_mode == 'images' else 3
        expected = math.ceil(math.ceil(num_samples / world_size) / per_batch)
        for rank in range(world_size):
            batch_sampler = build(
                LABELS[:num_samples],
                6,
                2,
                epoch_mode,
                rank,
                world_size,
                round_up=round_up)
            batches = list(batch_sampler)
            assert len(batches) == len(batch_sampler) == expected
            assert all(len(batch) == 6 for batch in batches)
    # 3 images on 4 ranks without round-up: rank 3's share is empty; it
    # takes its slots of the padded order (3 -> 0, 7 -> 1).
    batch_sampler = build([0, 0, 1], 4, 2, 'anchors', 3, 4, round_up=False)
    assert list(batch_sampler.sampler) == []
    assert groups_of(list(batch_sampler), 2)[:, 0].tolist() == [0, 1]


def test_batches_are_a_function_of_seed_and_epoch():
    """And of the rank: the pinned batches below hold ranks > 0."""
    batch_sampler = build(LABELS, 8, 2, 'anchors', seed=11)
    epochs = []
    for epoch in range(3):
        batch_sampler.sampler.set_epoch(epoch)
        epochs.append(list(batch_sampler))
    assert epochs[0] != epochs[1] != epochs[2]
    assert list(batch_sampler) == epochs[2]  # iterating again: the same
    fresh = build(LABELS, 8, 2, 'anchors', seed=11)
    fresh.sampler.set_epoch(2)
    assert list(fresh) == epochs[2]
    # Other seeds, a negative one too, give other batches.
    assert list(build(LABELS, 8, 2, 'anchors', seed=12)) != epochs[0]
    assert list(build(LABELS, 8, 2, 'anchors', seed=-11)) != epochs[0]


def test_infinite_sampler_never_stops_and_follows_its_order():
    batch_sampler, reference = (
        build(
            LABELS, 8, 2, rank=1, world_size=2, sampler_type=InfiniteSampler)
        for _ in range(2))
    assert len(batch_sampler) == math.ceil(math.ceil(203 / 2) / 8)
    # Three epochs' worth, past the end of the sampler's first permutation.
    groups = groups_of(list(itertools.islice(iter(batch_sampler), 40)), 2)
    assert (LABELS[groups[:, 0]] == LABELS[groups[:, 1]]).all()
    expected = itertools.islice(iter(reference.sampler), len(groups))
    assert groups[:, 0].tolist() == list(expected)


# Runs in progress and committed results depend on which images an epoch
# holds: for a given seed (0), epoch and rank the batches must not change.
# Pinned: the batches of the sampler of commit 19708c4 (before its rewrite
# to a plainer draw), as a digest of the whole epoch. Both label sets hold
# classes of 1, 2 and 3 images; LARGE spans several chunks of 256 batches
# in 'anchors' mode and in the InfiniteSampler cases.
SMALL, LARGE = LABELS, imbalanced_labels(5000, 40, seed=1)
# (labels, batch_size, num_instances, epoch_mode, rank, world_size, epoch,
#  batches taken from an InfiniteSampler or 0 for a DefaultSampler epoch):
#  (number of batches, digest)
PINNED = {
    ('SMALL', 8, 2, 'images', 0, 1, 0, 0): (26, '85beb7eab12c68d6'),
    ('SMALL', 8, 2, 'images', 0, 1, 3, 0): (26, '1418f33191b051ef'),
    ('SMALL', 8, 4, 'anchors', 1, 2, 1, 0): (51, '44c55bc94fc6ca27'),
    ('SMALL', 6, 3, 'anchors', 2, 3, 0, 0): (34, 'a1d0573ab143fe18'),
    ('LARGE', 8, 2, 'anchors', 0, 1, 0, 0): (1250, '54040ca0cb0b4472'),
    ('LARGE', 32, 2, 'images', 3, 4, 2, 0): (40, '1f885b8e30257cf9'),
    ('LARGE', 16, 4, 'anchors', 0, 2, 5, 0): (625, 'aa603023eaf7c3ff'),
    ('LARGE', 8, 2, 'images', 1, 2, 0, 600): (600, '94438ec65acc986e'),
    ('LARGE', 8, 4, 'images', 0, 1, 0, 600): (600, 'dba308b85ed152fd'),
}


def pinned_batches(labels, batch_size, num_instances, epoch_mode, rank,
                   world_size, epoch, infinite):
    """The batches of one epoch (or the first ``infinite`` batches)."""
    batch_sampler = build(
        dict(SMALL=SMALL,
             LARGE=LARGE)[labels], batch_size, num_instances, epoch_mode, rank,
        world_size, InfiniteSampler if infinite else DefaultSampler)
    batch_sampler.sampler.set_epoch(epoch)
    if infinite:
        return list(itertools.islice(iter(batch_sampler), infinite))
    return list(batch_sampler)


@pytest.mark.parametrize('case', list(PINNED), ids=str)
def test_batches_are_those_of_commit_19708c4(case):
    batches = pinned_batches(*case)
    data = np.asarray(batches, dtype='<i8').tobytes()
    assert (len(batches), hashlib.sha256(data).hexdigest()[:16]) == \
        PINNED[case]


def test_pinned_batches_written_out():
    """The first batch of three pinned cases: a failure shows what moved."""
    assert pinned_batches('SMALL', 8, 2, 'images', 0, 1, 0, 0)[0] == \
        [123, 128, 62, 72, 172, 25, 163, 17]
    assert pinned_batches('SMALL', 8, 4, 'anchors', 1, 2, 1, 0)[0] == \
        [26, 143, 42, 32, 171, 183, 48, 148]
    # 3411's class has three images: its mates are drawn with replacement.
    assert pinned_batches('LARGE', 16, 4, 'anchors', 0, 2, 5, 0)[0] == [
        3411, 1557, 1778, 1557, 3273, 2090, 908, 3196, 2858, 469, 3136, 365,
        3966, 2330, 2092, 690
    ]
