"""mmengine's CheckpointHook, safe to kill while saving and to resume."""
import contextlib
import logging
import os
import os.path as osp
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS

from ...utils import (checkpoint_globals, replace_atomically, temporary_path,
                      write_atomically)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) that keeps a resumable work dir.

    For mmengine 0.10.7 on torch >= 2.6 (docs/compatibility.md):

    - mmengine writes ``epoch_N.pth`` and ``last_checkpoint`` in place and,
      with ``max_keep_ckpts``, deletes the outdated checkpoint before it
      saves the new one: a kill while saving can leave a truncated file, an
      empty pointer or no checkpoint. Here both are written to temporaries
      and renamed into place, and the outdated checkpoint goes last (local
      folders; with ``backend_args``, ``file_client_args`` or a remote
      ``out_dir`` it saves as ``CheckpointHook``).
    - The runner's own load (``load_from``, ``resume``), between
      ``before_run`` and the start of training, validation or testing,
      runs in :func:`mmbake.utils.checkpoint_globals`: torch's weights-only
      unpickler reads mmengine's training checkpoints.
    - ``Runner.resume`` executes ``meta['config']`` as Python; it is
      removed from every checkpoint the runner loads, with a warning.
    """

    _loading: Optional[contextlib.ExitStack] = None

    def before_run(self, runner) -> None:
        super().before_run(runner)
        self._loading = contextlib.ExitStack()
        self._loading.enter_context(checkpoint_globals())

    def _loaded(self, runner) -> None:
        if self._loading is not None:
            self._loading.close()
            self._loading = None

    before_val = before_test = after_run = _loaded

    def before_train(self, runner) -> None:
        self._loaded(runner)
        super().before_train(runner)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Drop ``meta['config']``: resume would run it as Python code."""
        meta = checkpoint.get('meta')
        if isinstance(meta, dict) and meta.pop('config', None) is not None:
            print_log(
                "mmbake: ignoring meta['config'] of the checkpoint, which "
                "mmengine's Runner.resume would run as Python code",
                logger='current',
                level=logging.WARNING)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
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
        name = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, name)
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
