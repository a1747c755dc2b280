"""Draw BAKE's ensembled soft targets for a config and checkpoint.

For the first images of a few class-aware batches of the training set
(test-time transforms, a seeded anchor order), the model in eval mode gives
the ground truth, its own top-k (``softmax(z / T)``) and the top-k of the
ensembled target ``Q``, as in Fig. 5 of the BAKE paper::

    python tools/analysis_tools/visualize_soft_targets.py \\
        configs/bake/resnet18_1xb64_fashion-mnist.py CHECKPOINT \\
        --out-dir work_dirs/soft_targets --num-batches 2

writes ``soft_targets_batch{0,1}.png`` and prints, per batch, how often the
own and the ensembled top-1 are right, their mean probability of the ground
truth and ``same_class_affinity`` (affinity mass on same-class images over
their share of the batch; 1.0 = no preference). During training:
``custom_hooks=[dict(type='SoftTargetVisualizationHook', interval=1)]``.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import Config

# The tools' shared package, tools/mmbake_tools: this script's folder is on
# sys.path, tools/ is not.
TOOLS_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
if TOOLS_DIR not in sys.path:
    sys.path.insert(0, TOOLS_DIR)
# isort: off
from mmbake_tools.cli import (  # noqa: E402
    apply_cfg_options, errors_as_one_line, new_parser, parse_checked)
from mmbake_tools.cli import check_data_paths, reading_data  # noqa: E402

from mmbake.engine.hooks.check_labels_hook import \
    check_label_values  # noqa: E402
# isort: on


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line; bad input exits with status 2."""
    parser = new_parser('Draw the BAKE ensembled soft targets of a checkpoint',
                        'checkpoint file path')
    parser.add_argument('--out-dir', default='work_dirs/soft_targets')
    parser.add_argument('--num-batches', type=int, default=1)
    parser.add_argument(
        '--batch-size',
        type=int,
        help='images ensembled together (default: the training batch size)')
    parser.add_argument(
        '--max-images', type=int, default=16, help='images drawn per batch')
    parser.add_argument(
        '--ncols', type=int, default=8, help='images per row of a picture')
    parser.add_argument('--topk', type=int, default=3)
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of the anchor order')
    parser.add_argument(
        '--omega', type=float, help='default: the head\'s (or 0.5)')
    parser.add_argument(
        '--temperature', type=float, help='default: the head\'s (or 4.0)')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    args = parse_checked(parser, argv)
    for name in ('num_batches', 'max_images', 'ncols', 'topk', 'batch_size'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(
                f'--{name.replace("_", "-")} must be >= 1, got {value}')
    if args.omega is not None and not 0.0 <= args.omega < 1.0:
        parser.error(f'--omega must be in [0, 1), got {args.omega}')
    if args.temperature is not None and not args.temperature > 0:
        parser.error(f'--temperature must be > 0, got {args.temperature}')
    return args


def build_model(cfg: Config, checkpoint: str, device: str = 'cpu'):
    """The config's classifier with the checkpoint's weights, in eval mode.

    mmpretrain's ``get_model`` puts the config's ``data_preprocessor`` (the
    normalisation) into the model, as the runner does; without it batch
    normalisation's running statistics would not fit the images. A training
    checkpoint is read weights-only (``checkpoint_globals``).

    Args:
        cfg (Config): The full config.
        checkpoint (str): The checkpoint file.
        device (str): Device to put the model on. Defaults to 'cpu'.

    Returns:
        nn.Module: The model.
    """
    from mmpretrain.apis import get_model

    from mmbake.utils import checkpoint_globals

    with checkpoint_globals():
        return get_model(cfg, pretrained=checkpoint, device=device)


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Draw the pictures from the command line; return the PNGs' paths."""
    args = parse_args(argv)
    # Heavy imports after the command line is checked.
    from mmengine.registry import init_default_scope

    import mmbake  # noqa: F401  (registers BAKEHead and the sampler)
    from mmbake.visualization import (build_class_aware_batches, format_stats,
                                      visualize_batches)

    cfg = apply_cfg_options(Config.fromfile(args.config), args)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    with errors_as_one_line():
        check_data_paths(cfg, ('train_dataloader', ))
        model = build_model(cfg, args.checkpoint, args.device)
        with reading_data(cfg, 'train_dataloader'):
            batches = build_class_aware_batches(
                cfg,
                num_batches=args.num_batches,
                batch_size=args.batch_size,
                seed=args.seed)
        check_label_values(model, [
            int(sample.gt_label[0]) for batch in batches['batches']
            for sample in batch['data_samples']
        ], 'train_dataloader', batches['classes'])
    outputs = visualize_batches(
        model,
        batches,
        osp.join(args.out_dir, 'soft_targets'),
        omega=args.omega,
        temperature=args.temperature,
        max_images=args.max_images,
        ncols=args.ncols,
        topk=args.topk,
        title=osp.basename(args.checkpoint))
    for output in outputs:
        print(f'Wrote {output["path"]}')
        print('  ' + format_stats(output))
    return [output['path'] for output in outputs]


if __name__ == '__main__':
    main(sys.argv[1:])
