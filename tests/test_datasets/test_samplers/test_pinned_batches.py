"""Batches of ClassAwareBatchSampler pinned to the values of commit 19708c4.

Runs in progress and committed results depend on which images an epoch
holds, so for a given seed, epoch and rank the batches must not change.
The expected values were produced by the sampler of commit 19708c4 (before
its rewrite to a plainer draw). Each case is pinned by a digest of the whole
epoch; a few batches are written out so that a failure shows what moved.
"""
import hashlib
import itertools
from unittest.mock import patch

import numpy as np
import pytest
from label_toys import GtLabelsArray, imbalanced_labels
from mmengine.dataset import DefaultSampler, InfiniteSampler

from mmbake.datasets import ClassAwareBatchSampler

OUR_MODULE = 'mmbake.datasets.samplers.class_aware_batch_sampler'
pytestmark = pytest.mark.filterwarnings(
    'ignore:ClassAwareBatchSampler.*single image:UserWarning')

# Both label sets hold classes of 1, 2 and 3 images, so the single-image
# and with-replacement rules are pinned too. LARGE spans several chunks of
# 256 batches in 'anchors' mode and in the InfiniteSampler cases.
SMALL = imbalanced_labels(203, 17)
LARGE = imbalanced_labels(5000, 40, seed=1)

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


def epoch_batches(labels, batch_size, num_instances, epoch_mode, rank,
                  world_size, epoch, infinite):
    """The batches of one epoch (or the first ``infinite`` batches)."""
    labels = dict(SMALL=SMALL, LARGE=LARGE)[labels]
    with patch('mmengine.dataset.sampler.get_dist_info',
               return_value=(rank, world_size)), \
            patch(f'{OUR_MODULE}.get_dist_info',
                  return_value=(rank, world_size)):
        sampler_type = InfiniteSampler if infinite else DefaultSampler
        sampler = sampler_type(GtLabelsArray(labels), seed=0)
        batch_sampler = ClassAwareBatchSampler(sampler, batch_size,
                                               num_instances, epoch_mode)
    sampler.set_epoch(epoch)
    if infinite:
        return list(itertools.islice(iter(batch_sampler), infinite))
    return list(batch_sampler)


def digest(batches) -> str:
    """A short sha256 of the batches as little-endian int64."""
    data = np.asarray(batches, dtype='<i8').tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.parametrize('case', list(PINNED), ids=str)
def test_batches_are_those_of_commit_19708c4(case):
    batches = epoch_batches(*case)
    assert (len(batches), digest(batches)) == PINNED[case]


def test_one_mate_batches_written_out():
    batches = epoch_batches('SMALL', 8, 2, 'images', 0, 1, 0, 0)
    assert batches[:2] == [[123, 128, 62, 72, 172, 25, 163, 17],
                           [58, 146, 74, 184, 40, 125, 150, 119]]
    assert batches[-1] == [195, 84, 12, 48, 49, 191, 118, 144]
    batches = epoch_batches('LARGE', 8, 2, 'anchors', 0, 1, 0, 0)
    assert batches[:2] == [[1044, 3136, 2591, 1675, 4111, 82, 725, 113],
                           [1703, 4020, 1919, 4639, 2111, 3237, 138, 3624]]
    assert batches[-1] == [368, 2265, 756, 4178, 2158, 414, 2256, 4764]


def test_three_mate_batches_written_out():
    batches = epoch_batches('SMALL', 8, 4, 'anchors', 1, 2, 1, 0)
    assert batches[:2] == [[26, 143, 42, 32, 171, 183, 48, 148],
                           [6, 96, 77, 144, 40, 197, 125, 202]]
    assert batches[-1] == [78, 21, 147, 3, 49, 191, 22, 29]
    # 3411's class has three images: its mates are drawn with replacement.
    batches = epoch_batches('LARGE', 16, 4, 'anchors', 0, 2, 5, 0)
    assert batches[0] == [
        3411, 1557, 1778, 1557, 3273, 2090, 908, 3196, 2858, 469, 3136, 365,
        3966, 2330, 2092, 690
    ]
    assert batches[-1] == [
        2207, 3312, 807, 493, 4405, 241, 2474, 2831, 3972, 889, 4840, 956, 85,
        1758, 4274, 1749
    ]
