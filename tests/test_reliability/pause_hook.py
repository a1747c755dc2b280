"""A hook that parks a training run where ``MMBAKE_TEST_PAUSE`` says
(``iter:E:I``: before iteration I, 0-based, of epoch E, 1-based; ``save:E``:
while epoch E's checkpoint is serialised), printing ``PAUSED``, so that the
kill tests kill it at a known moment; inactive without the variable."""
import os
import time

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

PAUSE_ENV, MARKER = 'MMBAKE_TEST_PAUSE', 'PAUSED'
PAUSE_S = 600  # a forgotten process ends by itself


def park() -> None:
    """Say ``PAUSED`` and sleep until killed."""
    print(MARKER, flush=True)
    time.sleep(PAUSE_S)


class PauseWhilePickled:
    """Parks the process while ``torch.save`` serialises it."""

    def __reduce__(self):
        park()
        return (int, (0, ))


@HOOKS.register_module()
class ReliabilityPauseHook(Hook):
    """Park the run where ``MMBAKE_TEST_PAUSE`` says."""

    def __init__(self) -> None:
        kind, *numbers = os.environ.get(PAUSE_ENV, 'none').split(':')
        self.where = (kind, *map(int, numbers))

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if self.where == ('iter', runner.epoch + 1, batch_idx):
            park()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.where == ('save', checkpoint['meta']['epoch']):
            checkpoint['pause'] = PauseWhilePickled()
