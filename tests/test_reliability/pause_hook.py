"""A hook that parks a training run at a chosen point, for kill tests.

Configs written by the reliability tests list it in ``custom_hooks``; it
does nothing unless the environment variable ``MMBAKE_TEST_PAUSE`` is set,
so the uninterrupted and the resumed runs share the killed run's config:

- ``iter:E:I`` -- before iteration ``I`` (0-based) of epoch ``E``
  (1-based), print ``PAUSED`` and sleep;
- ``save:E`` -- while the checkpoint of epoch ``E`` is being serialised
  (``torch.save`` has opened the file), print ``PAUSED`` and sleep.

The test then kills the whole process group with SIGKILL: the pause only
makes the moment of the kill deterministic.
"""
import os
import sys
import time
from typing import Optional

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

PAUSE_ENV = 'MMBAKE_TEST_PAUSE'
MARKER = 'PAUSED'
# Long enough for any test to kill the run; short enough that a forgotten
# process ends by itself.
PAUSE_S = 600


def park() -> None:
    """Announce the pause on stdout and sleep until killed."""
    print(MARKER, flush=True)
    sys.stdout.flush()
    time.sleep(PAUSE_S)


class PauseWhilePickled:
    """Parks the process while ``torch.save`` serialises it."""

    def __reduce__(self):
        park()
        return (int, (0, ))


@HOOKS.register_module()
class ReliabilityPauseHook(Hook):
    """Park the run where ``MMBAKE_TEST_PAUSE`` says (see the module)."""

    def __init__(self) -> None:
        self.where: Optional[tuple] = None
        spec = os.environ.get(PAUSE_ENV, '')
        if spec:
            kind, *numbers = spec.split(':')
            self.where = (kind, *map(int, numbers))

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if self.where == ('iter', runner.epoch + 1, batch_idx):
            park()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.where == ('save', checkpoint['meta']['epoch']):
            checkpoint['pause'] = PauseWhilePickled()
