"""A hook that draws BAKE's soft targets while a model trains."""
import os.path as osp
from typing import Dict, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from ...visualization import (build_class_aware_batches, format_stats,
                              visualize_batches)


@HOOKS.register_module()
class SoftTargetVisualizationHook(Hook):
    """Draw BAKE's ensembled soft targets every few training epochs.

    Before training, the main process forms ``num_batches`` fixed
    class-aware batches of the training set (test-time transforms, seeded
    order); after every ``interval`` epochs (and after the last one) it
    draws the model's own top-k and the ensembled top-k for the same images
    into ``{out_dir}/epoch_{N}_batch{i}.png``, so that one can watch the
    targets sharpen. Works for plain heads too (with ``omega`` 0.5 and
    ``T`` 4 unless given). Other ranks do nothing.

    Args:
        interval (int): Draw every this many epochs. Defaults to 1.
        num_batches (int): Batches drawn each time. Defaults to 1.
        max_images (int): Images drawn per batch. Defaults to 16.
        topk (int): Classes listed per prediction. Defaults to 3.
        batch_size (int, optional): Images per batch; the training batch
            size when None.
        seed (int): Seed of the batches' anchor order. Defaults to 0.
        out_dir (str, optional): Output folder; ``{work_dir}/soft_targets``
            when None.
    """

    priority = 'LOW'

    def __init__(self,
                 interval: int = 1,
                 num_batches: int = 1,
                 max_images: int = 16,
                 topk: int = 3,
                 batch_size: Optional[int] = None,
                 seed: int = 0,
                 out_dir: Optional[str] = None) -> None:
        for name, value in (('interval', interval), ('num_batches',
                                                     num_batches),
                            ('max_images', max_images), ('topk', topk)):
            if isinstance(value,
                          bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f'{name} must be an int >= 1, but got {value!r}.')
        if batch_size is not None and (not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError('batch_size must be None or an int >= 1, but '
                             f'got {batch_size!r}.')
        self.interval = interval
        self.num_batches = num_batches
        self.max_images = max_images
        self.topk = topk
        self.batch_size = batch_size
        self.seed = seed
        self.out_dir = out_dir
        self._batches: Optional[Dict[str, object]] = None

    def before_train(self, runner) -> None:
        """Form the fixed batches once, on the main process."""
        if not is_main_process():
            return
        if self.out_dir is None:
            self.out_dir = osp.join(runner.work_dir, 'soft_targets')
        self._batches = build_class_aware_batches(
            runner.cfg,
            num_batches=self.num_batches,
            batch_size=self.batch_size,
            seed=self.seed)

    def after_train_epoch(self, runner) -> None:
        """Draw the batches after every ``interval`` epochs and the last."""
        if self._batches is None or not (self.every_n_epochs(
                runner, self.interval) or self.is_last_train_epoch(runner)):
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        epoch = runner.epoch + 1
        outputs = visualize_batches(
            model,
            self._batches,
            osp.join(self.out_dir, f'epoch_{epoch}'),
            max_images=self.max_images,
            topk=self.topk,
            title=f'epoch {epoch}')
        for output in outputs:
            runner.logger.info(f'Soft-target picture {output["path"]}: ' +
                               format_stats(output))
