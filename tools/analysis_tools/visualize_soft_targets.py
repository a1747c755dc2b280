"""Draw BAKE's ensembled soft targets for a config and checkpoint::

    python tools/analysis_tools/visualize_soft_targets.py \\
        configs/bake/resnet18_1xb64_fashion-mnist.py CHECKPOINT \\
        --out-dir work_dirs/soft_targets --num-batches 2

draws the first images of class-aware training batches (test transforms,
seeded order), their ground truth and the top-k of the model's own
``softmax(z / T)`` (eval mode) and of BAKE's target ``Q`` (Fig. 5 of the
paper) into ``soft_targets_batch{i}.png``, and prints the batches'
``mmbake.visualization.soft_target_stats``. The same during training:
``custom_hooks=[dict(type='SoftTargetVisualizationHook')]``.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import Config

# For tools/mmbake_tools: this script's folder is on sys.path, not tools/.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmbake_tools.cli import (  # noqa: E402 isort: skip
    apply_cfg_options, errors_as_one_line, new_parser, parse_checked)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line; bad input exits with status 2."""
    parser = new_parser('Draw the BAKE ensembled soft targets of a checkpoint',
                        'checkpoint file path')
    add = parser.add_argument
    add('--out-dir', default='work_dirs/soft_targets')
    add('--num-batches', type=int, default=1)
    add('--batch-size', type=int, help='default: the training batch size')
    add('--max-images', type=int, default=16, help='images drawn per batch')
    add('--ncols', type=int, default=8, help='images per row of a picture')
    add('--topk', type=int, default=3)
    add('--seed', type=int, default=0, help='seed of the anchor order')
    add('--omega', type=float, help='default: the head\'s (or 0.5)')
    add('--temperature', type=float, help='default: the head\'s (or 4.0)')
    add('--device', default='cpu', help='e.g. cpu, cuda:0')
    args = parse_checked(parser, argv)
    for flag in ('num-batches', 'batch-size', 'max-images', 'ncols', 'topk'):
        value = getattr(args, flag.replace('-', '_'))
        if value is not None and value < 1:
            parser.error(f'--{flag} must be >= 1, got {value}')
    if args.omega is not None and not 0.0 <= args.omega < 1.0:
        parser.error(f'--omega must be in [0, 1), got {args.omega}')
    if args.temperature is not None and not args.temperature > 0:
        parser.error(f'--temperature must be > 0, got {args.temperature}')
    return args


def build_model(cfg: Config, checkpoint: str, device: str = 'cpu'):
    """The config's classifier with the checkpoint's weights, in eval mode
    (``get_model`` puts the config's normalisation in it, as the runner
    does); a training checkpoint is read weights-only."""
    from mmpretrain.apis import get_model

    from mmbake.utils import checkpoint_globals
    with checkpoint_globals():
        return get_model(cfg, checkpoint, device=device)


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Draw the pictures from the command line; return the PNGs' paths."""
    args = parse_args(argv)
    # Heavy imports after the command line is checked.
    from mmengine.registry import init_default_scope

    import mmbake  # noqa: F401  (registers BAKEHead and the sampler)
    from mmbake.engine.hooks.check_labels_hook import check_label_values
    from mmbake.visualization import (build_class_aware_batches, format_stats,
                                      visualize_batches)

    cfg = apply_cfg_options(Config.fromfile(args.config), args)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    with errors_as_one_line():
        model = build_model(cfg, args.checkpoint, args.device)
        batches = build_class_aware_batches(
            cfg, args.num_batches, args.batch_size, seed=args.seed)
        samples = sum((b['data_samples'] for b in batches['batches']), [])
        check_label_values(model, [int(s.gt_label[0]) for s in samples],
                           'train_dataloader', batches['classes'])
    drawing = ('omega', 'temperature', 'max_images', 'ncols', 'topk')
    drawing = {k: getattr(args, k) for k in drawing}
    drawing['title'] = osp.basename(args.checkpoint)
    out = osp.join(args.out_dir, 'soft_targets')
    outputs = visualize_batches(model, batches, out, **drawing)
    for output in outputs:
        print(f'Wrote {output["path"]}\n  {format_stats(output)}')
    return [output['path'] for output in outputs]


if __name__ == '__main__':
    main(sys.argv[1:])
