"""Class-aware batches for BAKE: every anchor comes with same-class mates."""
import math
import warnings
from typing import Iterator, List, Optional

import numpy as np
from mmengine.dataset import InfiniteSampler
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from mmpretrain.registry import DATA_SAMPLERS
from .labels import get_dataset_labels

EPOCH_MODES = ('images', 'anchors')
# Anchors are processed this many batches at a time: large enough for numpy
# to amortise its per-call cost, small enough that an InfiniteSampler is
# only read a little ahead of the training loop.
_CHUNK_BATCHES = 256


@DATA_SAMPLERS.register_module()
class ClassAwareBatchSampler(Sampler):
    """Batch sampler that follows every anchor with same-class mates (BAKE).

    Each batch holds ``batch_size // num_instances`` anchors, taken in the
    order of the wrapped ``sampler`` (so shuffling, rank sharding and
    ``set_epoch`` are those of mmengine's ``DefaultSampler`` or
    ``InfiniteSampler``). Each anchor is followed by ``num_instances - 1``
    mates drawn from its class:

    - never the anchor itself while its class has two or more images;
    - without replacement while the class has at least ``num_instances``
      images, with replacement among the other images otherwise;
    - a class with a single image repeats the anchor as its own mate (one
      warning at construction lists such classes).

    Mates come from a numpy generator seeded by ``(seed, epoch, rank)``:
    ``seed`` is the wrapped sampler's seed (identical on every rank),
    ``epoch`` the wrapped sampler's epoch when iteration starts. The batches
    of an epoch are therefore a pure function of ``(seed, epoch, rank)``:
    reproducible, different every epoch, and identical after a resume.

    Epoch length (``epoch_mode``), with ``N = len(dataset)``, ``W`` the world
    size, ``n = ceil(N / W)`` the plain sampler's share of one rank and
    ``A = batch_size // num_instances`` anchors per batch:

    - ``'images'`` (default): an epoch holds as many images as the plain
      sampler's epoch, ``ceil(n / batch_size)`` batches. ``batch_size`` keeps
      meaning images per GPU per iteration, so iteration counts, schedules
      and ``auto_scale_lr`` are those of the plain config. Only the first
      ``ceil(n / batch_size) * A`` anchors of the wrapped order are used in
      an epoch (about ``1 / num_instances`` of it); shuffling draws a
      different subset every epoch.
    - ``'anchors'``: every index of the rank's share is an anchor once,
      ``ceil(n / A)`` batches: ``num_instances`` times the iterations of a
      plain epoch (the authors' convention). Epoch-based schedules then see
      ``num_instances`` times the images and iterations.

    Every rank yields exactly ``len(self)`` full batches of ``batch_size``
    indices (``n`` does not depend on the rank), so a cross-rank gather in
    the head never waits for a missing or short batch. If the wrapped
    sampler runs out of anchors first (e.g. ``round_up=False``, or the last
    batch of ``'anchors'`` mode), its order is restarted to fill the epoch.
    With an ``InfiniteSampler`` the iteration never ends; ``len()`` still
    reports the per-epoch formula above.

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
        if not hasattr(sampler, 'dataset') or not hasattr(
                sampler, '__iter__'):
            raise ValueError(
                'sampler must be an iterable sampler with a `dataset` '
                '(e.g. mmengine DefaultSampler or InfiniteSampler), got '
                f'{sampler!r}')
        if not _is_int(batch_size) or batch_size <= 0:
            raise ValueError(
                f'batch_size must be a positive int, got {batch_size!r}')
        if not _is_int(num_instances) or num_instances < 1:
            raise ValueError(
                f'num_instances must be an int >= 1, got {num_instances!r}')
        if batch_size % num_instances != 0:
            raise ValueError(
                f'batch_size ({batch_size}) must be divisible by '
                f'num_instances ({num_instances})')
        if epoch_mode not in EPOCH_MODES:
            raise ValueError(f'epoch_mode must be one of {EPOCH_MODES}, got '
                             f'{epoch_mode!r}')

        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.num_instances = int(num_instances)
        self.epoch_mode = epoch_mode
        self.anchors_per_batch = self.batch_size // self.num_instances
        self.rank, self.world_size = get_dist_info()
        # Only used when the wrapped sampler has no seed of its own; the
        # call is collective, so every rank makes it at construction.
        self._fallback_seed: Optional[int] = (
            None if getattr(sampler, 'seed', None) is not None else
            sync_random_seed())

        labels = get_dataset_labels(sampler.dataset)
        self._build_class_index(labels)
        self.num_samples = math.ceil(len(labels) / self.world_size)

    def _build_class_index(self, labels: np.ndarray) -> None:
        """Precompute, once, where every index sits among its class mates.

        ``_by_class`` lists the dataset indices sorted by class; the class of
        index ``i`` occupies ``_by_class[start : start + size]`` with
        ``start = _class_start[_code[i]]``, ``size = _class_size[_code[i]]``,
        and ``i`` itself is at offset ``_pos_in_class[i]`` of that slice.
        """
        num = labels.shape[0]
        index_dtype = np.int32 if num < 2**31 else np.int64
        # Labels are >= 0 (checked when read); below 2**16 numpy's stable
        # argsort is a radix sort, several times faster at ImageNet scale.
        keys = labels.astype(np.uint16) if labels.max() < 2**16 else labels
        by_class = np.argsort(keys, kind='stable').astype(index_dtype)
        sorted_labels = labels[by_class]
        class_start = np.concatenate(
            [[0], np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1])
        class_size = np.diff(np.append(class_start, num))
        class_ids = sorted_labels[class_start]
        code_sorted = np.repeat(
            np.arange(class_ids.shape[0], dtype=index_dtype), class_size)
        code = np.empty(num, dtype=index_dtype)
        code[by_class] = code_sorted
        pos = np.empty(num, dtype=index_dtype)
        pos[by_class] = (np.arange(num, dtype=index_dtype) -
                         class_start.astype(index_dtype)[code_sorted])

        self._by_class = by_class
        self._code = code
        self._pos_in_class = pos
        self._class_start = class_start.astype(np.int64)
        self._class_size = class_size.astype(np.int64)
        self.singleton_classes: List[int] = [
            int(c) for c in class_ids[class_size == 1]
        ]
        # Every rank sees the same labels: one warning from rank 0 is enough.
        if self.singleton_classes and self.num_instances > 1 \
                and self.rank == 0:
            warnings.warn(
                f'ClassAwareBatchSampler: {len(self.singleton_classes)} '
                'class(es) have a single image, whose anchor is repeated as '
                f'its own mate: {self.singleton_classes}', UserWarning)

    @property
    def seed(self) -> int:
        """int: The seed of the mates, read from the wrapped sampler."""
        seed = getattr(self.sampler, 'seed', None)
        return int(seed if seed is not None else self._fallback_seed)

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
            np.random.SeedSequence(
                [self.seed & 0xFFFFFFFFFFFFFFFF, epoch, self.rank]))
        anchors = self._anchor_stream()
        infinite = isinstance(self.sampler, InfiniteSampler)
        remaining = len(self)
        while infinite or remaining > 0:
            num_batches = (
                _CHUNK_BATCHES if infinite else min(_CHUNK_BATCHES,
                                                    remaining))
            chunk = np.fromiter(
                anchors, dtype=np.int64,
                count=num_batches * self.anchors_per_batch)
            yield from self._make_batches(chunk, rng).tolist()
            remaining -= num_batches

    def _anchor_stream(self) -> Iterator[int]:
        """The wrapped sampler's indices, restarted whenever it runs out."""
        while True:
            yielded = False
            for index in self.sampler:
                yielded = True
                yield index
            if not yielded:
                # A rank with an empty share (round_up=False and fewer
                # samples than ranks) must still fill its batches: take the
                # rank's slots of the cyclically padded order, as
                # DefaultSampler(round_up=True) would.
                num = self._code.shape[0]
                while True:
                    for slot in range(self.rank, num * self.world_size,
                                      self.world_size):
                        yield slot % num

    def _make_batches(self, anchors: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
        """Follow each anchor by its mates; return (batches, batch_size)."""
        mates = self._draw_mates(anchors, rng)
        groups = np.concatenate([anchors[:, None], mates], axis=1)
        return groups.reshape(-1, self.batch_size)

    def _draw_mates(self, anchors: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
        """Draw ``num_instances - 1`` same-class mates for every anchor.

        Works on offsets inside the anchor's class (size ``n``, anchor at
        offset ``p``). Without replacement (``n - 1 >= M``), mate ``k`` is
        uniform over the ``n - 1 - k`` offsets not yet taken: draw ``r`` in
        ``[0, n - 1 - k)`` and step it past every taken offset, in ascending
        order, that it reaches. With replacement (``2 <= n <= M``) each mate
        is uniform over the ``n - 1`` offsets other than ``p``. ``n == 1``
        yields ``p`` itself. One uniform float per mate keeps the random
        stream independent of how anchors are chunked.
        """
        num_mates = self.num_instances - 1
        count = anchors.shape[0]
        if num_mates == 0:
            return np.empty((count, 0), dtype=np.int64)
        code = self._code[anchors]
        size = self._class_size[code]
        pos = self._pos_in_class[anchors].astype(np.int64)
        without_repl = size - 1 >= num_mates

        steps = np.arange(num_mates, dtype=np.int64)
        bound = np.where(without_repl[:, None],
                         size[:, None] - 1 - steps[None, :],
                         size[:, None] - 1)
        uniform = rng.random((count, num_mates))
        draws = np.minimum((uniform * bound).astype(np.int64),
                           np.maximum(bound - 1, 0))

        # Offsets a draw must step past. Rows drawn with replacement only
        # avoid the anchor: their later columns hold a sentinel never reached.
        sentinel = np.iinfo(np.int64).max
        taken = np.full((count, num_mates), sentinel, dtype=np.int64)
        taken[:, 0] = pos
        mate_pos = np.empty((count, num_mates), dtype=np.int64)
        for k in range(num_mates):
            r = draws[:, k].copy()
            ordered = np.sort(taken[:, :k + 1], axis=1)
            for j in range(k + 1):
                r += r >= ordered[:, j]
            mate_pos[:, k] = r
            if k + 1 < num_mates:
                taken[:, k + 1] = np.where(without_repl, r, sentinel)
        mate_pos[size == 1] = pos[size == 1, None]

        start = self._class_start[code]
        return self._by_class[start[:, None] + mate_pos].astype(np.int64)


def _is_int(value: object) -> bool:
    """True for int-like values, False for bool and floats."""
    return isinstance(value, (int, np.integer)) and not isinstance(
        value, bool)
