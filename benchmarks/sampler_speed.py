"""Time ClassAwareBatchSampler at ImageNet-1k scale against a naive scan.

Build and epoch times of one rank (best of ``--repeats``), the naive
per-anchor class scan (timed on ``--naive-anchors`` anchors, extrapolated)
and the peak extra memory (docs/sampler.md)::

    python benchmarks/sampler_speed.py [--world-size 8 --rank 0 ...]
"""
import argparse
import gc
import platform
import resource
import time
import tracemalloc
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator, List, Tuple
from unittest.mock import patch

import numpy as np
from mmengine.dataset import DefaultSampler
from torch.utils.data import BatchSampler

from mmbake.datasets import ClassAwareBatchSampler

OUR_MODULE = 'mmbake.datasets.samplers.class_aware_batch_sampler'
# The options (all integers) and their defaults.
FLAGS = (('num-images', 1_281_167), ('num-classes', 1000), ('world-size', 8),
         ('rank', 0), ('batch-size', 32), ('num-instances', 2),
         ('naive-anchors', 3000), ('repeats', 3))


class LabelOnlyDataset:
    """Just labels, answered by ``get_gt_labels`` as mmpretrain does."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def get_gt_labels(self) -> np.ndarray:
        return self.labels


def imagenet_like_labels(num_images: int, num_classes: int) -> np.ndarray:
    """Shuffled labels with ImageNet-1k's class sizes: most classes full
    (1,300 at ImageNet's size), the first ones cut to 56 % of that (732)
    until the total is ``num_images``."""
    max_size = -(-num_images // num_classes) + 18
    max_cut = max_size - round(max_size * 0.563)
    deficit = num_classes * max_size - num_images
    cuts = np.clip(deficit - max_cut * np.arange(num_classes), 0, max_cut)
    labels = np.repeat(np.arange(num_classes), max_size - cuts)
    np.random.default_rng(0).shuffle(labels)
    return labels


@contextmanager
def as_rank(rank: int, world_size: int) -> Iterator[None]:
    """Make mmengine's sampler and ours believe they run on ``rank``."""
    info = dict(return_value=(rank, world_size))
    with patch('mmengine.dataset.sampler.get_dist_info', **info), \
            patch(f'{OUR_MODULE}.get_dist_info', **info):
        yield


def best_of(repeats: int, fn: Callable[[], object]) -> Tuple[float, object]:
    """Smallest wall time of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def consume(batches) -> int:
    """Iterate like a DataLoader does; return the number of batches."""
    return sum(1 for _ in batches)


def naive_class_lists(labels: List[int]) -> dict:
    """The reference's build step: one Python list of indices per class."""
    class_lists = defaultdict(list)
    for index, label in enumerate(labels):
        class_lists[label].append(index)
    return class_lists


def naive_mates(anchors: List[int], labels: List[int], class_lists: dict,
                num_mates: int) -> List[int]:
    """The reference's per-anchor step: scan the class, then choose."""
    out = []
    for anchor in anchors:
        out.append(anchor)
        pool = [j for j in class_lists[labels[anchor]] if j != anchor]
        if not pool:
            continue
        replace = len(pool) < num_mates
        out.extend(np.random.choice(pool, size=num_mates, replace=replace))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    for flag, default in FLAGS:
        parser.add_argument(f'--{flag}', type=int, default=default)
    args = parser.parse_args()

    labels = imagenet_like_labels(args.num_images, args.num_classes)
    dataset = LabelOnlyDataset(labels)
    sizes = np.bincount(labels)
    print(f'machine: {platform.processor() or platform.machine()}, '
          f'python {platform.python_version()}, numpy {np.__version__}')
    print(f'labels: {len(labels):,} over {len(sizes)} classes '
          f'(class sizes {sizes.min()}-{sizes.max()}); rank {args.rank} of '
          f'{args.world_size}; batch {args.batch_size}, num_instances '
          f'{args.num_instances}')

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with as_rank(args.rank, args.world_size):
        sampler = DefaultSampler(dataset, shuffle=True, seed=0)

        def build(epoch_mode: str = 'images') -> ClassAwareBatchSampler:
            return ClassAwareBatchSampler(sampler, args.batch_size,
                                          args.num_instances, epoch_mode)

        t_build, ours = best_of(args.repeats, build)
        t_epoch, num_batches = best_of(args.repeats, lambda s=ours: consume(s))
        anchors_mode = build('anchors')
        t_epoch_anchors, num_batches_anchors = best_of(
            args.repeats, lambda s=anchors_mode: consume(s))
        plain = BatchSampler(sampler, args.batch_size, drop_last=False)
        t_plain, num_plain = best_of(args.repeats, lambda: consume(plain))
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        # Memory, in a separate pass: tracemalloc slows the timed code.
        del ours, anchors_mode
        gc.collect()
        traced = []
        for batches in (build, lambda: plain):
            tracemalloc.start()
            consume(batches())
            traced.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        traced_peak, traced_plain = traced

    anchors_per_batch = args.batch_size // args.num_instances
    epoch_anchors = num_batches * anchors_per_batch
    label_list = labels.tolist()
    start = time.perf_counter()
    class_lists = naive_class_lists(label_list)
    t_naive_build = time.perf_counter() - start
    probe = list(sampler)[:args.naive_anchors]
    np.random.seed(0)
    start = time.perf_counter()
    naive_mates(probe, label_list, class_lists, args.num_instances - 1)
    t_probe = time.perf_counter() - start
    per_anchor = t_probe / len(probe)
    t_naive_epoch = per_anchor * epoch_anchors
    t_naive_epoch_anchors = per_anchor * num_batches_anchors * \
        anchors_per_batch

    ours_total = t_build + t_epoch
    naive_total = t_naive_build + t_naive_epoch
    print(f"\nClassAwareBatchSampler, epoch_mode='images' "
          f'({num_batches} batches, {epoch_anchors:,} anchors):')
    print(f'  build            {t_build:8.3f} s')
    print(f'  one epoch        {t_epoch:8.3f} s')
    print(f'  build + epoch    {ours_total:8.3f} s')
    print(f"ClassAwareBatchSampler, epoch_mode='anchors' "
          f'({num_batches_anchors} batches): one epoch '
          f'{t_epoch_anchors:.3f} s')
    print(f'plain DefaultSampler + BatchSampler ({num_plain} batches): '
          f'one epoch {t_plain:.3f} s')
    print(f'\nnaive per-anchor class scan (timed on {len(probe):,} anchors, '
          f'{per_anchor * 1e6:.1f} us/anchor, extrapolated):')
    print(f'  build            {t_naive_build:8.3f} s')
    print(f"  one epoch        {t_naive_epoch:8.3f} s  ('images' epoch)")
    print(f"  one epoch        {t_naive_epoch_anchors:8.3f} s  ('anchors' "
          'epoch, the reference length)')
    print(f'  build + epoch    {naive_total:8.3f} s')
    speedup, peak_mb = naive_total / ours_total, traced_peak / 2**20
    print(f'\nspeed-up, build + epoch: {speedup:,.0f}x; '
          f'epoch only: {t_naive_epoch / t_epoch:,.0f}x')
    print('peak extra memory, build + one epoch: tracemalloc '
          f'{peak_mb:.1f} MB (plain sampler epoch alone '
          f'{traced_plain / 2**20:.1f} MB, so '
          f'{(traced_peak - traced_plain) / 2**20:.1f} MB on top of it); '
          f'peak RSS growth over all timed runs '
          f'{(rss_after - rss_before) / 1024:.1f} MB')  # Linux: KiB
    ok = ours_total <= 0.5 and speedup >= 50 and peak_mb < 200
    print('targets (<= 0.5 s build + epoch, >= 50x, < 200 MB): ' +
          ('met' if ok else 'NOT met'))


if __name__ == '__main__':
    main()
