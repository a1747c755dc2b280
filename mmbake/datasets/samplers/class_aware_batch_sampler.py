"""Class-aware batches for BAKE: every anchor comes with same-class mates."""
import math
import warnings
from itertools import chain, cycle, repeat
from numbers import Integral
from typing import Iterator, List

import numpy as np
from mmengine.dataset import InfiniteSampler
from mmengine.dist import get_dist_info, sync_random_seed
from mmpretrain.registry import DATA_SAMPLERS
from torch.utils.data import Sampler

from .labels import get_dataset_labels

EPOCH_MODES = ('images', 'anchors')
# Batches made per numpy pass: enough to amortise numpy's per-call cost, few
# enough to read an InfiniteSampler only a little ahead of training.
_CHUNK_BATCHES = 256


@DATA_SAMPLERS.register_module()
class ClassAwareBatchSampler(Sampler):
    """Batch sampler that follows every anchor with same-class mates (BAKE).

    Each batch holds ``batch_size // num_instances`` anchors in the order of
    the wrapped ``sampler`` (its shuffling, rank sharding and ``set_epoch``
    unchanged), each followed by ``num_instances - 1`` mates of its class:
    never the anchor itself, unless the class has one image (one warning
    lists such classes); without replacement if the class has enough
    images. Mates are seeded by ``(seed, epoch, rank)``, with the wrapped
    sampler's ``seed`` and ``epoch``: an epoch's batches are reproducible,
    differ between epochs and are the same after a resume.

    With ``n = ceil(len(dataset) / world_size)``, an epoch has
    ``ceil(n / batch_size)`` batches in ``'images'`` mode (the images of a
    plain epoch) and ``ceil(n * num_instances / batch_size)`` in
    ``'anchors'`` mode (every index of the share an anchor once), on every
    rank, so a cross-rank gather never waits; the wrapped order restarts if
    it runs out first. With an ``InfiniteSampler`` it never ends. An
    ``'images'`` epoch takes its anchors from the start of the wrapped
    order, so that order must be shuffled (ValueError otherwise, unless an
    ``InfiniteSampler``). See docs/sampler.md.

    Args:
        sampler (Sampler): The sampler of anchors, usually mmengine's
            ``DefaultSampler`` or ``InfiniteSampler``. It must have a
            ``dataset`` attribute; its ``seed`` and ``epoch`` are used when
            present. Kept as ``self.sampler``.
        batch_size (int): Images per batch (per GPU), anchors and mates
            together. Must be a multiple of ``num_instances``.
        num_instances (int): Images per class group, the anchor included
            (``M + 1`` in the paper). 1 gives plain batches. Defaults to 2.
        epoch_mode (str): ``'images'`` or ``'anchors'``, see above.
            Defaults to ``'images'``.
    """

    def __init__(self,
                 sampler: Sampler,
                 batch_size: int,
                 num_instances: int = 2,
                 epoch_mode: str = 'images') -> None:
        if not (hasattr(sampler, 'dataset') and hasattr(sampler, '__iter__')):
            raise ValueError(
                'sampler must be an iterable sampler with a `dataset` '
                '(e.g. mmengine DefaultSampler or InfiniteSampler), got '
                f'{sampler!r}')
        for name, value in (('batch_size', batch_size), ('num_instances',
                                                         num_instances)):
            if not isinstance(value, Integral) or isinstance(
                    value, bool) or value < 1:
                raise ValueError(f'{name} must be an int >= 1, got {value!r}')
        if batch_size % num_instances != 0:
            raise ValueError(f'batch_size ({batch_size}) must be divisible by '
                             f'num_instances ({num_instances})')
        if epoch_mode not in EPOCH_MODES:
            raise ValueError(f'epoch_mode must be one of {EPOCH_MODES}, got '
                             f'{epoch_mode!r}')
        # Raised on every rank (the same settings everywhere), before the
        # collective sync_random_seed(): no rank is left waiting.
        unshuffled = getattr(sampler, 'shuffle', True) is False and \
            not isinstance(sampler, InfiniteSampler)
        if epoch_mode == 'images' and num_instances > 1 and unshuffled:
            raise ValueError(
                f'ClassAwareBatchSampler: the {type(sampler).__name__} it '
                "wraps has shuffle=False, and in epoch_mode='images' only "
                f'the first 1/{num_instances} of its order are anchors: the '
                'same images every epoch (in a class-sorted annotation file, '
                "some classes never). Set shuffle=True in the "
                "train_dataloader's sampler, or epoch_mode='anchors'.")

        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.num_instances = int(num_instances)
        self.epoch_mode = epoch_mode
        self.anchors_per_batch = self.batch_size // self.num_instances
        self.rank, self.world_size = get_dist_info()
        # sync_random_seed() is collective: every rank calls it, or none.
        seed = getattr(sampler, 'seed', None)
        self.seed = int(seed) if seed is not None else sync_random_seed()

        labels = get_dataset_labels(sampler.dataset)
        self.num_samples = math.ceil(len(labels) / self.world_size)
        # The indices sorted by class, ascending within a class: class
        # number c is _by_class[_start[c]:_start[c] + _size[c]], and index
        # i sits at _by_class[_where[i]].
        self._by_class = np.argsort(labels, kind='stable')
        self._where = np.empty_like(self._by_class)
        self._where[self._by_class] = np.arange(len(labels))
        sorted_labels = labels[self._by_class]
        self._start = np.flatnonzero(np.diff(sorted_labels, prepend=-1))
        self._size = np.diff(self._start, append=len(labels))
        single = self._start[self._size == 1]
        self.singleton_classes = sorted_labels[single].tolist()
        # Every rank sees the same labels: one warning from rank 0 is enough.
        if self.singleton_classes and self.num_instances > 1 and \
                self.rank == 0:
            warnings.warn(
                f'ClassAwareBatchSampler: {len(self.singleton_classes)} '
                'class(es) have a single image, whose anchor is repeated as '
                f'its own mate: {self.singleton_classes}', UserWarning)

    def __len__(self) -> int:
        """The number of batches of one epoch on this rank."""
        if self.epoch_mode == 'images':
            return math.ceil(self.num_samples / self.batch_size)
        return math.ceil(self.num_samples / self.anchors_per_batch)

    def __iter__(self) -> Iterator[List[int]]:
        """Yield batches: lists of ``batch_size`` dataset indices."""
        epoch = int(getattr(self.sampler, 'epoch', 0) or 0)
        # SeedSequence takes non-negative entropy; mask, don't abs(), so that
        # distinct seeds stay distinct.
        rng = np.random.default_rng(
            [self.seed & 0xFFFFFFFFFFFFFFFF, epoch, self.rank])
        anchors = self._anchors()
        infinite = isinstance(self.sampler, InfiniteSampler)
        remaining = math.inf if infinite else len(self)
        while remaining > 0:
            num_batches = min(_CHUNK_BATCHES, remaining)
            chunk = np.fromiter(anchors, np.int64,
                                num_batches * self.anchors_per_batch)
            groups = np.column_stack([chunk, self._draw_mates(chunk, rng)])
            yield from groups.reshape(-1, self.batch_size).tolist()
            remaining -= num_batches

    def _anchors(self) -> Iterator[int]:
        """The wrapped sampler's indices, restarted whenever it runs out.

        A rank with an empty share (``round_up=False``, fewer samples than
        ranks) takes its slots of the padded order, as ``round_up`` would.
        """
        order = iter(self.sampler)
        first = next(order, None)
        if first is None:
            num, world_size = len(self._by_class), self.world_size
            slots = range(self.rank, num * world_size, world_size)
            return cycle([slot % num for slot in slots])
        return chain([first], order, chain.from_iterable(repeat(self.sampler)))

    def _draw_mates(self, anchors: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
        """Draw ``num_instances - 1`` mates of each anchor's class.

        In a class of ``n`` images with the anchor at offset ``p``, mate
        ``k`` is the ``r``-th offset not yet taken (counted upwards), ``r``
        uniform over their number: ``n - 1 - k`` without replacement (the
        anchor and mates ``0 .. k - 1`` taken), ``n - 1`` with replacement
        (only ``p`` taken). ``n == 1`` gives ``p``. One uniform float per
        mate keeps the random stream independent of the chunking of anchors.

        Args:
            anchors (np.ndarray): Dataset indices of the anchors, ``(A,)``.
            rng (np.random.Generator): The generator of the epoch.

        Returns:
            np.ndarray: Their mates' dataset indices, ``(A, num_mates)``.
        """
        num_mates = self.num_instances - 1
        where = self._where[anchors]
        code = np.searchsorted(self._start, where, side='right') - 1
        start, size = self._start[code], self._size[code]
        pos = where - start
        repeats = size - 1 < num_mates
        uniform = rng.random((len(anchors), num_mates))
        mates = np.empty((len(anchors), num_mates), dtype=np.int64)
        taken = pos[:, None]  # sorted along each row
        for k in range(num_mates):
            free = np.where(repeats, size - 1, size - 1 - k)
            # min(): u * free may round up to free in floating point.
            r = np.minimum((uniform[:, k] * free).astype(np.int64),
                           np.maximum(free - 1, 0))
            for offset in taken.T:
                r += r >= offset
            mates[:, k] = np.where(size == 1, pos, r)
            if k + 1 < num_mates:
                # With replacement only the anchor stays taken: such rows
                # take `size`, an offset that r never reaches.
                newest = np.where(repeats, size, r)
                taken = np.sort(np.column_stack([taken, newest]), axis=1)
        return self._by_class[start[:, None] + mates]
