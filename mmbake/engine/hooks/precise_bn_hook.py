"""mmpretrain's PreciseBNHook for train loaders built with a batch sampler."""
from numbers import Integral
from typing import Iterator

from mmengine.dist import get_world_size
from mmengine.logging import print_log
from mmpretrain.engine.hooks import PreciseBNHook
from mmpretrain.engine.hooks.precise_bn_hook import update_bn_stats
from mmpretrain.registry import HOOKS
from torch.utils.data import DataLoader


def _batch_size(loader: DataLoader) -> int:
    """Images per batch and rank: those of the loader's batch sampler
    (PyTorch's ``DataLoader.batch_size`` is None with a ``batch_sampler``,
    e.g. ``ClassAwareBatchSampler``; else its own ``BatchSampler`` has it).
    """
    batch_size = getattr(loader.batch_sampler, 'batch_size', None)
    if batch_size is None:
        raise ValueError(
            'BatchSamplerPreciseBNHook needs the batch size of the train '
            f'dataloader, but its batch_sampler ({loader.batch_sampler!r}) '
            'has no `batch_size`')
    return int(batch_size)


class _WithBatchSize:
    """The train loader as ``update_bn_stats`` reads it: ``batch_size``
    (that of its batch sampler), ``len()`` and iteration."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        self.batch_size = _batch_size(loader)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        return iter(self.loader)


@HOOKS.register_module()
class BatchSamplerPreciseBNHook(PreciseBNHook):
    """``PreciseBNHook`` that also works with a batch sampler.

    After every ``interval`` epochs (or iterations, in an iteration-based
    loop), the BN statistics are recomputed with the weights fixed, on
    ``num_samples // (batch_size * world_size)`` batches of the train
    dataloader per rank, and averaged over the ranks (mmpretrain's
    ``update_bn_stats``), as the authors' pycls runs do on 8,192 images.
    Here ``batch_size`` is the batch sampler's, where mmpretrain 1.2.0's
    hook reads the loader's (None with a batch sampler: TypeError).
    Priority ``ABOVE_NORMAL``: it runs before the checkpoint hook saves.
    In an iteration-based loop over an ``InfiniteSampler``, the batches it
    reads come out of the training stream, which a resume does not replay.

    Args:
        num_samples (int): Training images (all ranks together) to compute
            the statistics on; at least ``batch_size * world_size``, or
            mmpretrain's update would run no batch and set every statistic
            to zero (a ValueError before training). Defaults to 8192.
        interval (int): Epochs (iterations) between updates. Defaults to 1.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, num_samples: int = 8192, interval: int = 1) -> None:
        for name, value in (('num_samples', num_samples), ('interval',
                                                           interval)):
            if not isinstance(value, Integral) or isinstance(
                    value, bool) or value < 1:
                raise ValueError(f'{name} must be an int >= 1, got {value!r}')
        super().__init__(num_samples=int(num_samples), interval=int(interval))

    def before_train(self, runner) -> None:
        """Refuse a ``num_samples`` smaller than one batch on every rank."""
        batch_size = _batch_size(runner.train_loop.dataloader)
        world_size = get_world_size()
        if self.num_samples < batch_size * world_size:
            raise ValueError(
                f'BatchSamplerPreciseBNHook: num_samples ({self.num_samples}) '
                f'must be at least batch_size x world_size ({batch_size} x '
                f'{world_size} = {batch_size * world_size}): with fewer, '
                'precise BN runs no batch and sets every BN statistic to '
                'zero')

    def _perform_precise_bn(self, runner) -> None:
        """The parent's update, on the loader seen with its batch size."""
        print_log(
            f'Running Precise BN for {self.num_samples} samples...',
            logger=runner.logger)
        update_bn_stats(
            runner.model,
            _WithBatchSize(runner.train_loop.dataloader),
            self.num_samples,
            logger=runner.logger)
        print_log('Finish Precise BN, BN stats updated.', logger=runner.logger)
