"""Which checkpoint ``tools/train.py --resume`` continues from, checked."""
import glob
import os
import os.path as osp
import sys
from typing import Optional

from mmengine.config import Config


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint that ``--resume`` (without a path) continues from.

    mmengine reads the path in ``<work_dir>/last_checkpoint``. When that
    pointer exists but is empty or names a missing or truncated file (a
    kill while saving, with an mmengine that writes in place), the newest
    complete ``*.pth`` of the work dir is taken instead, with a warning.

    Args:
        work_dir (str): The run's work dir.

    Returns:
        str, optional: The checkpoint, or None without a pointer (mmengine
        then starts from scratch, as it always does).

    Raises:
        ValueError: If the pointer is broken and no complete checkpoint is
            left in the work dir.
    """
    from mmbake.compat import checkpoint_is_truncated

    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        named = f.read().strip()
    if named and osp.isfile(named) and not checkpoint_is_truncated(named):
        return named
    complete = [
        path for path in glob.glob(osp.join(work_dir, '*.pth'))
        if osp.isfile(path) and not checkpoint_is_truncated(path)
    ]
    if not complete:
        raise ValueError(
            f'--resume: {pointer} names {named!r}, which is missing or '
            f'incomplete, and {work_dir} holds no other complete checkpoint; '
            'train without --resume to start over')
    chosen = max(complete, key=osp.getmtime)
    print(
        f'warning: {pointer} names {named!r}, which is missing or '
        f'incomplete; resuming from {chosen}, the newest complete '
        'checkpoint in the work dir',
        file=sys.stderr,
        flush=True)
    return chosen


def prepare_resume(cfg: Config) -> None:
    """Pick and check the checkpoint to resume from; take over its seed.

    The checkpoint is read once with the weights-only unpickler (tensors
    memory-mapped), so a truncated file or one holding code is refused
    before anything is built. mmengine 0.10.7 builds the train dataloader,
    and its sampler's seed, before it restores the seed stored in the
    checkpoint, so with ``randomness.seed=None`` a resumed run would shuffle
    differently from the run it continues: the stored seed is therefore set
    in the config here.

    Args:
        cfg (Config): A config with ``resume=True``; ``load_from`` is the
            checkpoint, or None for the work dir's latest.

    Raises:
        ValueError: If the checkpoint cannot be resumed from.
    """
    from mmbake.compat import load_checkpoint_weights_only

    path = cfg.get('load_from', None)
    if path is None:
        path = find_resume_checkpoint(cfg.work_dir)
        if path is None:
            return
        cfg.load_from = path
    meta = load_checkpoint_weights_only(path).get('meta', None)
    if not isinstance(meta, dict) or 'epoch' not in meta \
            or 'iter' not in meta:
        raise ValueError(
            f'--resume: {path} is not a training checkpoint of mmengine\'s '
            "runner (its meta has no 'epoch'/'iter'); to start from its "
            f'weights, use --cfg-options load_from={path} without --resume')
    randomness = dict(cfg.get('randomness', None) or {})
    if randomness.get('seed', None) is None and meta.get('seed') is not None:
        randomness['seed'] = int(meta['seed'])
        cfg.randomness = randomness
        if os.environ.get('RANK', '0') == '0':
            print(
                f'Resuming with the seed of the checkpoint, '
                f'{randomness["seed"]} (randomness.seed is None in the '
                'config)',
                flush=True)
