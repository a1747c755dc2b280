"""Test a checkpoint: mmpretrain's ``tools/test.py``, with what it lacks.

    python tools/test.py CONFIG CHECKPOINT [--out results.pkl]

(several processes: ``tools/dist_test.sh``): CPU processes over gloo; a
mistake in the input (also a checkpoint that is cut short or holds objects
the weights-only unpickler refuses) ends with one ``error:`` line
(``mmbake_tools.cli``); the test top-1 comes last.
"""
# tools/mmbake_tools, found beside this script.
from mmbake_tools.cli import (errors_as_one_line, leave, loading, name_keys_of,
                              new_runner, say, stock_tool)


def main() -> None:
    """Test from the command line."""
    with errors_as_one_line():
        import mmengine
        from mmengine.evaluator import DumpResults

        import mmbake  # noqa: F401 (BAKE types, without custom_imports too)
        from mmbake.utils import load_checkpoint_weights_only

        tool, args, cfg = stock_tool('test.py')
        allowed = ('.pkl', '.pickle') + (
            ('.json', '.yaml', '.yml') if args.out_item == 'metrics' else ())
        if args.out is not None and not args.out.endswith(allowed):
            raise ValueError(f'--out {args.out} must end with one of '
                             f'{allowed} (--out-item {args.out_item})')
        if args.interval < 1:
            raise ValueError(f'--interval must be >= 1, got {args.interval}')
        if args.show_dir and not cfg.get('default_hooks',
                                         {}).get('visualization'):
            raise ValueError('--show-dir needs default_hooks.visualization='
                             'dict(type="VisualizationHook") in the config '
                             "(mmpretrain's default_runtime has it)")
        cfg = name_keys_of(tool.merge_args(cfg, args), ('test_dataloader', ))
        # Testing never resumes (a dumped config of a resumed run says so).
        cfg.resume = False
        # Refuse a truncated file or one holding code before building.
        load_checkpoint_weights_only(args.checkpoint)
        runner = new_runner(cfg)
        if args.out and args.out_item != 'metrics':
            runner.test_evaluator.metrics.append(
                DumpResults(out_file_path=args.out))
        with loading(runner, args.checkpoint):
            metrics = runner.test()

    if runner.rank == 0:
        if args.out and args.out_item == 'metrics':
            mmengine.dump(metrics, args.out)
        if 'accuracy/top1' in metrics:
            say(f'Test top-1: {float(metrics["accuracy/top1"]):.2f}')
    leave()


if __name__ == '__main__':
    main()
