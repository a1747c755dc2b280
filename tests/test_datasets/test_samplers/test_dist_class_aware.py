"""ClassAwareBatchSampler under real torch.distributed (gloo) ranks.

In each world the batch sampler is built under the real process group for
several wrapped samplers, and every batch is gathered across ranks the way
a global BAKE head does (an unequal number of batches would hang here, and
fail the run on its timeout).
"""
import itertools

import numpy as np
import pytest
import torch
import torch.distributed as dist
from label_toys import LabelsOnly, imbalanced_labels
from mmengine.dataset import DefaultSampler, InfiniteSampler

from mmbake.datasets import ClassAwareBatchSampler
from tests.dist_utils import run_distributed

CASES = {
    'default-images': (DefaultSampler, dict(), 'images'),
    'default-anchors': (DefaultSampler, dict(), 'anchors'),
    'no-round-up-images': (DefaultSampler, dict(round_up=False), 'images'),
    'no-round-up-anchors': (DefaultSampler, dict(round_up=False), 'anchors'),
    'infinite': (InfiniteSampler, dict(), 'images'),
}


def _report(rank: int, world_size: int) -> dict:
    """What this rank's batch samplers yield, for every case."""
    dataset = LabelsOnly(imbalanced_labels(101, 9, seed=world_size))
    report, ranks = dict(labels=dataset.data.tolist()), range(world_size)
    for name, (sampler_type, kwargs, epoch_mode) in CASES.items():
        # seed=None: the seed comes from mmengine's collective
        # sync_random_seed(), as in a real run.
        sampler = sampler_type(dataset, **kwargs)
        batch_sampler = ClassAwareBatchSampler(sampler, 6, 3, epoch_mode)
        sampler.set_epoch(1)
        if sampler_type is InfiniteSampler:
            num = 2 * len(batch_sampler) + 1
            batches = list(itertools.islice(iter(batch_sampler), num))
            # The anchors must continue the sampler's own stream.
            fresh = InfiniteSampler(dataset, seed=sampler.seed)
            wrapped = list(itertools.islice(iter(fresh), num * 2))
        else:
            batches, wrapped = list(batch_sampler), list(sampler)
        for batch in batches:
            gathered = [torch.empty(6, dtype=torch.int64) for _ in ranks]
            dist.all_gather(gathered, torch.tensor(batch))
        report[name] = dict(
            len=len(batch_sampler),
            batches=batches,
            wrapped=wrapped,
            seed=batch_sampler.seed)
    try:
        ClassAwareBatchSampler(DefaultSampler(dataset, shuffle=False), 6, 3)
    except ValueError as error:
        report['unshuffled'] = str(error)
    return report


@pytest.mark.dist
@pytest.mark.parametrize('world_size', [2, 3])
def test_gloo_ranks_agree(world_size):
    reports = run_distributed(_report, world_size)
    labels = np.array(reports[0]['labels'])
    num_samples = -(-len(labels) // world_size)
    for name in CASES:
        cases = [report[name] for report in reports]
        per_batch = 2 if name.endswith('anchors') else 6  # anchors: 6 // 3
        expected_len = -(-num_samples // per_batch)
        # Same seed, same length and as many batches everywhere.
        assert {case['seed'] for case in cases} == {cases[0]['seed']}
        assert {case['len'] for case in cases} == {expected_len}, name
        all_anchors, all_wrapped = [], []
        for case in cases:
            groups = np.array(case['batches']).reshape(-1, 3)
            assert (labels[groups] == labels[groups[:, :1]]).all(), name
            anchors, wrapped = groups[:, 0].tolist(), case['wrapped']
            if name == 'infinite':
                assert len(case['batches']) == 2 * expected_len + 1
                assert anchors == wrapped[:len(anchors)]
                continue
            assert len(case['batches']) == expected_len
            # Anchors follow the wrapped order, restarted if it ran out.
            cycled = itertools.islice(itertools.cycle(wrapped), len(anchors))
            assert anchors == list(cycled), name
            all_anchors += anchors[:len(wrapped)]
            all_wrapped += wrapped
        if name.endswith('anchors'):
            # Every index of the wrapped samplers is an anchor, over ranks.
            assert sorted(all_anchors) == sorted(all_wrapped)
            assert set(all_anchors) == set(range(len(labels)))
    # shuffle=False in 'images' mode: refused on every rank, with the fix.
    for report in reports:
        for part in ('DefaultSampler', "epoch_mode='images'", 'shuffle=True',
                     "epoch_mode='anchors'"):
            assert part in report['unshuffled']
