"""Draw BAKE's ensembled soft targets for a config and checkpoint.

Forms a few class-aware batches of the training set (test-time transforms,
so no random crop; the anchor order of a seeded sampler, each anchor
followed by its same-class mates), runs the model in eval mode and draws,
for the first images of each batch, the ground truth, the model's own
top-k (``softmax(z / T)``) and the top-k of the ensembled target ``Q``
(as in Fig. 5 of the BAKE paper)::

    python tools/analysis_tools/visualize_soft_targets.py \\
        configs/bake/resnet18_1xb64_fashion-mnist.py CHECKPOINT \\
        --out-dir work_dirs/soft_targets --num-batches 2

writes ``work_dirs/soft_targets/soft_targets_batch{0,1}.png`` and prints,
per batch, how often the own and the ensembled top-1 are right, their mean
probability of the ground truth, and ``same_class_affinity`` (the affinity
mass on same-class images over their share of the batch; 1.0 = no
preference). The same picture during training: add
``custom_hooks=[dict(type='SoftTargetVisualizationHook', interval=1)]`` to
the config (PNGs in ``<work_dir>/soft_targets/``).
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
from mmbake_tools.cli import (  # noqa: E402
    apply_cfg_options, errors_as_one_line, new_parser, parse_checked)
from mmbake_tools.data_checks import (  # noqa: E402
    check_data_paths, check_label_values, reading_data)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        argparse.Namespace: The arguments. Bad input exits with status 2.
    """
    parser = new_parser(
        'Draw the BAKE ensembled soft targets of a checkpoint',
        'checkpoint file path')
    parser.add_argument(
        '--out-dir',
        default='work_dirs/soft_targets',
        help='folder of the PNGs (soft_targets_batch{i}.png)')
    parser.add_argument('--num-batches', type=int, default=1)
    parser.add_argument(
        '--batch-size',
        type=int,
        help='images per batch (the ensembling runs over the whole batch); '
        'the config\'s training batch size by default')
    parser.add_argument('--max-images', type=int, default=16,
                        help='images drawn per batch, from its start')
    parser.add_argument('--ncols', type=int, default=8,
                        help='images per row of the picture')
    parser.add_argument('--topk', type=int, default=3)
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the batches\' anchor order')
    parser.add_argument(
        '--omega',
        type=float,
        help='propagation weight; the head\'s (or 0.5) by default')
    parser.add_argument(
        '--temperature',
        type=float,
        help='temperature T; the head\'s (or 4.0) by default')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    args = parse_checked(parser, argv)
    for name in ('num_batches', 'max_images', 'ncols', 'topk'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got '
                         f'{getattr(args, name)}')
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
    if args.omega is not None and not 0.0 <= args.omega < 1.0:
        parser.error(f'--omega must be in [0, 1), got {args.omega}')
    if args.temperature is not None and not args.temperature > 0:
        parser.error(f'--temperature must be > 0, got {args.temperature}')
    return args


def build_model(cfg: Config, checkpoint: str, device: str = 'cpu'):
    """Build the config's classifier and load a checkpoint into it.

    The config's top-level ``data_preprocessor`` (the normalisation) goes
    into the model, as mmengine's runner and mmpretrain's ``init_model``
    do; without it the images would stay in 0-255 and batch normalisation's
    running statistics would not fit them.

    Args:
        cfg (Config): The full config.
        checkpoint (str): The checkpoint file.
        device (str): Device to put the model on. Defaults to 'cpu'.

    Returns:
        nn.Module: The model, in eval mode.
    """
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    load_checkpoint(model, checkpoint, map_location='cpu')
    model.to(device)
    model.eval()
    return model


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Draw the pictures from the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        list[str]: The PNG paths written.
    """
    args = parse_args(argv)
    # Heavy imports after the command line is checked.
    import mmbake  # noqa: F401  (registers BAKEHead and the sampler)
    from mmengine.registry import init_default_scope

    from mmbake.visualization import (build_class_aware_batches,
                                      format_stats, visualize_batches)

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
        check_label_values(
            model, [
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
