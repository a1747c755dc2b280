"""Test (evaluate) a checkpoint, with mmpretrain's command-line flags.

    python tools/test.py CONFIG CHECKPOINT [--out results.pkl]

Several processes go through ``tools/dist_test.sh``. As in
``tools/train.py``: ``mmbake`` is imported, with ``SafeCheckpointHook``
and gloo without GPU; bad input (also a checkpoint
that is truncated or holds objects the weights-only unpickler refuses) ends
with one ``error:`` line and exit status 2; the test top-1 is printed last;
distributed processes leave through ``os._exit``.
"""
import argparse
from typing import List, Optional

# tools/mmbake_tools, found beside this script.
from mmbake_tools.cli import (apply_cfg_options, errors_as_one_line,
                              gather_in_work_dir, leave, load_config,
                              new_parser, new_runner, parse_checked, say)
from mmbake_tools.data_checks import (check_data_paths, check_labels_fit,
                                      reading_data)
from mmengine.config import Config

LOADERS = ('test_dataloader', )
PICKLE_SUFFIXES = ('.pkl', '.pickle')
METRIC_SUFFIXES = ('.json', '.yaml', '.yml') + PICKLE_SUFFIXES


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line; bad input exits with status 2."""
    parser = new_parser('Test (and evaluate) a checkpoint', 'checkpoint file',
                        'the evaluation log and metrics')
    parser.add_argument(
        '--out',
        help='dump the predictions to a pickle (.pkl), or with --out-item '
        'metrics the metrics (.json, .yaml or .pkl)')
    parser.add_argument(
        '--out-item', choices=['pred', 'metrics'], default='pred')
    parser.add_argument(
        '--amp', action='store_true', help='mixed-precision inference')
    parser.add_argument(
        '--show-dir',
        help='draw the prediction on every --interval-th test image, there')
    parser.add_argument('--interval', type=int, default=1)
    args = parse_checked(parser, argv,
                         'tools/dist_test.sh CONFIG CHECKPOINT GPUS')
    if args.out is not None:
        allowed = (
            PICKLE_SUFFIXES if args.out_item == 'pred' else METRIC_SUFFIXES)
        if not args.out.endswith(allowed):
            parser.error(f'--out {args.out}: with --out-item '
                         f'{args.out_item} the file must end with one of '
                         f'{allowed}')
    if args.interval < 1:
        parser.error(f'--interval must be >= 1, got {args.interval}')
    return args


def merge_args(args: argparse.Namespace) -> Config:
    """Load the config and fold the command-line arguments into it."""
    cfg = load_config(args, LOADERS, persistent_workers=False)
    cfg.load_from = args.checkpoint
    # Testing never resumes a training state.
    cfg.resume = False
    if args.amp:
        cfg.test_cfg.fp16 = True
    if args.show_dir is not None:
        hooks = cfg.get('default_hooks', {})
        if 'visualization' not in hooks:
            raise ValueError(
                '--show-dir needs default_hooks.visualization='
                'dict(type="VisualizationHook") in the config (mmpretrain\'s '
                'default_runtime has it)')
        hooks.visualization.enable = True
        hooks.visualization.out_dir = args.show_dir
        hooks.visualization.interval = args.interval
    return apply_cfg_options(cfg, args, LOADERS)


def main(argv: Optional[List[str]] = None) -> None:
    """Test from the command line."""
    args = parse_args(argv)
    # Registers the BAKE types, also for configs without custom_imports.
    import mmengine
    from mmengine.evaluator import DumpResults

    import mmbake  # noqa: F401
    from mmbake.utils import load_checkpoint_weights_only

    with errors_as_one_line():
        cfg = merge_args(args)
        check_data_paths(cfg, LOADERS)
        # Refuse a truncated file or one holding code before building
        # anything (mmengine would load it inside runner.test()).
        load_checkpoint_weights_only(args.checkpoint)
        runner = new_runner(cfg)
        # Built here, not lazily in runner.test(), so that bad settings and
        # data are reported before testing starts.
        with reading_data(cfg, 'test_dataloader'):
            test_loop = runner.test_loop
        check_labels_fit(runner.model, test_loop.dataloader.dataset,
                         'test_dataloader')

    if args.out is not None and args.out_item == 'pred':
        runner.test_evaluator.metrics.append(
            DumpResults(out_file_path=args.out))
    gather_in_work_dir(runner.test_evaluator, cfg.work_dir)
    metrics = runner.test()

    if runner.rank == 0:
        if args.out is not None and args.out_item == 'metrics':
            mmengine.dump(metrics, args.out)
        if 'accuracy/top1' in metrics:
            # One write: the other ranks print their last line meanwhile.
            say(f'Test top-1: {float(metrics["accuracy/top1"]):.2f}')
    if args.launcher != 'none':
        leave()


if __name__ == '__main__':
    main()
