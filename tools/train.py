"""Train: mmpretrain's ``tools/train.py`` (same command line; several
processes through ``tools/dist_train.sh``), with what it lacks: CPU
processes over gloo, ``--amp`` without GPU in bfloat16, the resume checks
(:func:`prepare_resume`), one ``error:`` line for a mistake in the input
(``mmbake_tools.cli``) and the validation top-1 last."""
import glob
import os.path as osp
import sys

# tools/mmbake_tools, found beside this script.
from mmbake_tools.cli import (errors_as_one_line, leave, loading, name_keys_of,
                              new_runner, say, stock_tool)
from mmengine.config import Config

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def merge_args(tool, args, cfg: Config) -> Config:
    """mmpretrain's ``merge_args``, and what it cannot do without GPU."""
    if args.auto_scale_lr and not cfg.get('auto_scale_lr', None):
        raise ValueError('--auto-scale-lr needs auto_scale_lr in the config')
    # After --cfg-options, which cannot merge into a removed val dataloader.
    no_validate, args.no_validate = args.no_validate, False
    cfg = name_keys_of(tool.merge_args(cfg, args), LOADERS)
    if no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    for field in filter(cfg.get, LOADERS):
        if cfg[field].get(
                'persistent_workers') and not cfg[field].get('num_workers'):
            cfg[field].persistent_workers = False
            say(f'mmbake: {field}.persistent_workers=False (torch refuses '
                'it without workers)')
    wrapper = cfg.optim_wrapper
    from mmbake.utils import cpu_only
    if wrapper.get('type') == 'AmpOptimWrapper' and cpu_only():
        if wrapper.get('dtype') not in (None, 'bfloat16'):
            raise ValueError("optim_wrapper.dtype must be 'bfloat16' (the "
                             'only dtype of CPU autocast), but got '
                             f'{wrapper.dtype!r}')
        # mmengine's AmpOptimWrapper asserts a GPU; bfloat16 autocast needs
        # no loss scaling.
        wrapper.type = 'BFloat16OptimWrapper'
        wrapper.pop('dtype', None)
        wrapper.pop('loss_scale', None)
        say('mmbake: no GPU: optim_wrapper.type=BFloat16OptimWrapper')
    return cfg


def prepare_resume(cfg: Config) -> None:
    """Pick the checkpoint (``--resume`` alone: ``last_checkpoint``'s, or
    the newest complete one, as a kill while mmengine's CheckpointHook
    saves cuts one short); refuse one cut short, holding code or not for
    training (resume reads ``meta`` ``epoch``, ``iter``, ``message_hub``);
    take its seed: mmengine 0.10.7 seeds the train sampler before it
    restores the seed, so with none a resumed run would shuffle anew."""
    from mmbake.utils import checkpoint_is_truncated as cut
    from mmbake.utils import load_checkpoint_weights_only

    path, pointer = cfg.load_from, osp.join(cfg.work_dir, 'last_checkpoint')
    if path is not None and cut(path):
        raise ValueError(f'--resume checkpoint {path} is not complete: the '
                         'file was cut short (e.g. the run was killed while '
                         'saving it); give another checkpoint, or --resume '
                         'alone for the latest complete one')
    if path is None and osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        found = [named] + sorted(
            glob.glob(osp.join(cfg.work_dir, '*.pth')),
            key=osp.getmtime,
            reverse=True)
        found = [p for p in found if osp.isfile(p) and not cut(p)]
        if not found:
            raise ValueError(
                f'--resume: {pointer} names {named!r}, which is missing or '
                f'incomplete, and {cfg.work_dir} holds no other complete '
                'checkpoint; train without --resume to start over')
        if found[0] != named:
            print(
                f'warning: {pointer} names {named!r}, which is missing or '
                f'incomplete; resuming from {found[0]}, the newest complete '
                'checkpoint in the work dir',
                file=sys.stderr)
        path = cfg.load_from = found[0]
    if path is None:
        return
    checkpoint = load_checkpoint_weights_only(path)
    meta = checkpoint.get('meta', None)
    if not (isinstance(meta, dict) and {'epoch', 'iter'} <= set(meta)
            and 'message_hub' in checkpoint):
        raise ValueError(
            f'--resume: {path} is not a training checkpoint of mmengine\'s '
            "runner (no meta 'epoch'/'iter' or no 'message_hub': a "
            'released, published or calibrated file); to start from its '
            f'weights, use --cfg-options load_from={path} without --resume')
    randomness = cfg.get('randomness', None) or {}
    if randomness.get('seed', None) is None and meta.get('seed') is not None:
        cfg.randomness = dict(randomness, seed=int(meta['seed']))
        say(f'Resuming with the seed of the checkpoint, {meta["seed"]} '
            '(randomness.seed is None in the config)')


def main() -> None:
    """Train from the command line."""
    with errors_as_one_line():
        import mmbake  # noqa: F401 (BAKE types, without custom_imports too)
        tool, args, cfg = stock_tool('train.py')
        cfg = merge_args(tool, args, cfg)
        if cfg.get('resume', False):
            prepare_resume(cfg)
        runner = new_runner(cfg)
        with loading(runner, cfg.get('load_from', None)):
            runner.train()

    top1 = runner.message_hub.log_scalars.get('val/accuracy/top1')
    if top1 is not None:
        from mmengine.runner import IterBasedTrainLoop
        unit = 'iter' if isinstance(runner.train_loop,
                                    IterBasedTrainLoop) else 'epoch'
        line = (f'Final top-1 (val, {unit} {getattr(runner, unit)}{{}}): '
                f'{top1.current():.2f}')
        # Every rank reports the metric it holds: they must agree.
        if args.launcher != 'none':
            say(line.format(f', rank {runner.rank}/{runner.world_size}'))
        if runner.rank == 0:
            say(line.format(''))
    leave()


if __name__ == '__main__':
    main()
