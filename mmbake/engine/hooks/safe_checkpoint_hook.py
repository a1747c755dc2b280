"""mmengine's CheckpointHook, with checkpoints that torch's weights-only
loading reads and that a kill while saving leaves resumable."""
import logging
import os
import os.path as osp
from typing import List, Set

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmpretrain.registry import HOOKS

from ...utils import (checkpoint_from_plain, checkpoint_to_plain,
                      replace_atomically, temporary_path, write_atomically)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) for mmengine 0.10.7 on torch >= 2.6
    (docs/compatibility.md), for mmengine's ``Runner``.

    - mmengine's checkpoints hold ``message_hub``'s ``HistoryBuffer``s and
      numpy values, which ``torch.load``'s weights-only default refuses, so
      ``init_model``, inferencers, test tools and resume fail on them. Here
      they are saved as tensors and plain data
      (:func:`mmbake.utils.checkpoint_to_plain`) and rebuilt in
      ``after_load_checkpoint``, before resume reads them. A checkpoint
      holding anything else without such a form (another hook's object) is
      saved unchanged, in mmengine's format, with a warning naming the key.
    - ``Runner.resume`` executes ``meta['config']`` as Python; it is
      removed from every checkpoint the runner loads, with a warning.
    - mmengine deletes the outdated checkpoint (``max_keep_ckpts``) before
      it saves the new one and writes the file and ``last_checkpoint`` in
      place: a kill while saving can leave a truncated file, an empty
      pointer or no checkpoint. Here both go through a temporary renamed
      into place and the outdated checkpoint goes last (local folders; with
      ``backend_args``, ``file_client_args`` or a remote ``out_dir`` it
      saves as ``CheckpointHook``).

    What hooks of lower priority than this one (``VERY_LOW``) add to the
    checkpoint comes after the conversion and is saved as it is.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._refused: Set[str] = set()

    def before_train(self, runner) -> None:
        if not isinstance(runner, Runner):
            # FlexibleRunner's strategies (DeepSpeed, ColossalAI, sharded
            # FSDP) write directories, which one rename cannot replace.
            raise TypeError(
                'SafeCheckpointHook saves single-file checkpoints of '
                "mmengine's Runner through an atomic rename, but the runner "
                f'is a {type(runner).__name__}, whose strategies may save '
                "checkpoint directories; use mmengine's CheckpointHook "
                "(default_hooks.checkpoint.type='CheckpointHook')")
        super().before_train(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store numpy values and ``HistoryBuffer``s as tensors and plain
        data, unless something else in ``checkpoint`` has no such form."""
        refused: List[str] = []
        plain = checkpoint_to_plain(checkpoint, 'checkpoint', refused)
        if not refused:
            # mmengine saves the dict it handed over: update it in place.
            checkpoint.update(plain)
        elif not self._refused.issuperset(refused):
            self._refused.update(refused)
            print_log(
                f'mmbake: {", ".join(refused)} has no form that torch\'s '
                'weights-only loading reads, so this checkpoint and later '
                "ones holding it are saved in mmengine's format, which "
                'torch.load, init_model and mmpretrain\'s tools refuse on '
                'torch >= 2.6',
                logger='current',
                level=logging.WARNING)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Rebuild what :meth:`before_save_checkpoint` stored (either format
        loads) and drop ``meta['config']``, which resume would run."""
        checkpoint.update(checkpoint_from_plain(checkpoint))
        meta = checkpoint.get('meta')
        if isinstance(meta, dict) and meta.pop('config', None) is not None:
            print_log(
                "mmbake: ignoring meta['config'] of the checkpoint, which "
                "mmengine's Runner.resume would run as Python code",
                logger='current',
                level=logging.WARNING)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        # mmengine's method (checkpoint_hook.py:413) with the order changed:
        # save to a temporary, rename it and the pointer into place, then
        # delete the outdated checkpoint. It has no smaller extension point:
        # the file name it saves to is also the one it records.
        remote = self.backend_args is not None \
            or self.file_client_args is not None or '://' in str(self.out_dir)
        if remote:
            return super()._save_checkpoint_with_step(runner, step, meta)
        outdated = None
        # A best checkpoint of the same step may have been saved already.
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        self.last_ckpt = osp.join(self.out_dir,
                                  self.filename_tmpl.format(step))
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        # Runner.save_checkpoint writes on the main process only.
        main = is_main_process()
        temporary = temporary_path(self.last_ckpt) if main else self.last_ckpt
        runner.save_checkpoint(
            self.out_dir,
            osp.basename(temporary),
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            **self.args)
        if not main:
            return
        replace_atomically(temporary, self.last_ckpt)
        write_atomically(lambda f: f.write(self.last_ckpt.encode()),
                         osp.join(runner.work_dir, 'last_checkpoint'))
        if outdated is not None:
            path = osp.join(self.out_dir, self.filename_tmpl.format(outdated))
            if osp.isfile(path):
                os.remove(path)
