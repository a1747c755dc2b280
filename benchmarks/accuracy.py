"""Accuracy study on Fashion-MNIST: vanilla CE, label smoothing and BAKE.

Trains the repository's Fashion-MNIST configs through the real runner
(``tools/train.py``, one subprocess per run, so every run starts from a
clean state) for three methods over several seeds, paired by seed:

- ``vanilla``: configs/fashion_mnist/resnet18_1xb64-vanilla_fashion-mnist.py;
- ``label_smoothing``: the same config with mmpretrain's
  ``LabelSmoothLoss(label_smooth_val=0.1)`` as the head's loss;
- ``bake``: configs/bake/resnet18_1xb64_fashion-mnist.py (the paper's
  defaults: omega 0.5, T 4, lambda 1, one same-class mate per anchor).

Every run uses the first ``--train-images`` training images, trains
``--epochs`` epochs (the cosine schedule is stretched to match), is
evaluated once, after the final epoch, on the official 10,000 test images,
and reports that final-epoch top-1. Nothing is chosen on the test images.

Results are appended to the JSON file as soon as each run ends; a rerun
skips the (method, seed) pairs already there, so the study resumes after an
interruption. At the end, ``benchmarks/report.py`` writes the markdown
table and the plot. Example (the command behind docs/accuracy.md)::

    python benchmarks/accuracy.py --jobs 2 --threads 1

Each run's scalar log is kept in ``benchmarks/results/logs/`` and the first
seed's final checkpoint of each method in ``work_dirs/accuracy/``.

Training curves and soft-target pictures (separate runs, validated every
epoch, not part of the results)::

    python benchmarks/accuracy.py --curves --methods vanilla bake --seeds 0
"""
import argparse
import json
import math
import os
import os.path as osp
import shutil
import sys
import tempfile
import threading
from glob import glob
from typing import List, Optional, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
# benchmarks/ is no package: its modules import each other from here.
import report  # noqa: E402
from study_runs import (  # noqa: E402
    REPO_ROOT, add_output_args, changed_since_snapshot, checkpoint_meta,
    code_digest, machine_info, read_scalars, run_in_parallel, run_training,
    save_json, say_stamped, scalars_path, take_snapshot, utc_now)

VANILLA_CONFIG = ('configs/fashion_mnist/'
                  'resnet18_1xb64-vanilla_fashion-mnist.py')
BAKE_CONFIG = 'configs/bake/resnet18_1xb64_fashion-mnist.py'
LABEL_SMOOTH_VAL = 0.1
BATCH_SIZE = 64
# Fields of the recorded config that must match for a resumed study.
RESUME_KEYS = ('epochs', 'train_images', 'batch_size', 'configs',
               'method_options', 'code_digest')


def method_setup(method: str) -> Tuple[str, List[str]]:
    """The config file and the method's own ``--cfg-options``.

    Args:
        method (str): One of ``report.METHODS``.

    Returns:
        tuple[str, list[str]]: Config path (relative to the repository) and
        ``key=value`` overrides.
    """
    if method == 'vanilla':
        return VANILLA_CONFIG, []
    if method == 'label_smoothing':
        return VANILLA_CONFIG, [
            'model.head.loss.type=LabelSmoothLoss',
            f'model.head.loss.label_smooth_val={LABEL_SMOOTH_VAL}',
        ]
    if method == 'bake':
        return BAKE_CONFIG, []
    raise ValueError(f'method must be one of {report.METHODS}, but got '
                     f'{method!r}')


def common_options(epochs: int, train_images: int, seed: int,
                   data_root: str) -> List[str]:
    """``--cfg-options`` shared by every method.

    The schedule's cosine phase ends at ``max_epochs`` of the config file
    (evaluated when the file is read), so it is moved along with
    ``train_cfg.max_epochs``: otherwise a longer run would train at the
    final learning rate of zero, or a shorter one stop mid-decay.

    Args:
        epochs (int): Training epochs.
        train_images (int): The first this many training images are used.
        seed (int): The run's seed.
        data_root (str): The Fashion-MNIST data root.

    Returns:
        list[str]: ``key=value`` overrides.
    """
    options = [
        f'train_cfg.max_epochs={epochs}',
        # Validate once, after the final epoch.
        f'train_cfg.val_interval={epochs}',
        f'param_scheduler.1.end={epochs}',
        f'train_dataloader.dataset.indices={train_images}',
        f'train_dataloader.batch_size={BATCH_SIZE}',
        f'randomness.seed={seed}',
        'randomness.deterministic=False',
        # Only the final checkpoint (read for the iteration count).
        f'default_hooks.checkpoint.interval={epochs}',
    ]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [
            f'{loader}.dataset.data_root={data_root}',
            # Data loading in the training process: one core per run.
            f'{loader}.num_workers=0',
            f'{loader}.persistent_workers=False',
        ]
    return options


def images_per_epoch(method: str, train_images: int) -> int:
    """Images one epoch feeds to the model.

    The plain loader visits each image once (a last, smaller batch when
    ``train_images`` is not a multiple of the batch size); the class-aware
    batch sampler (``epoch_mode='images'``) yields the same number of
    batches, all full.
    """
    if method == 'bake':
        return math.ceil(train_images / BATCH_SIZE) * BATCH_SIZE
    return train_images


def final_top1(records: List[dict], epochs: int) -> float:
    """The validation top-1 logged after the final epoch.

    Raises:
        RuntimeError: If the last validation record is not for ``epochs``.
    """
    val = [r for r in records if 'accuracy/top1' in r]
    if not val or int(val[-1]['step']) != epochs:
        raise RuntimeError(f'no validation top-1 for epoch {epochs}: {val}')
    return float(val[-1]['accuracy/top1'])


def checkpoint_iterations(work_dir: str, epochs: int) -> int:
    """The iteration count stored in the final checkpoint's meta."""
    return int(
        checkpoint_meta(osp.join(work_dir, f'epoch_{epochs}.pth'))['iter'])


class Study:
    """Runs the (method, seed) pairs and appends each result to the JSON.

    Args:
        args (argparse.Namespace): The parsed command line.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.code_root = take_snapshot(args.snapshot_dir)
        self.results = self._load_or_create()

    def _study_config(self) -> dict:
        """What the result file records about the setup."""
        args = self.args
        return dict(
            epochs=args.epochs,
            train_images=args.train_images,
            train_subset=f'the first {args.train_images} of the 60,000 '
            'official training images (dataset indices)',
            test_images=10000,
            test_set='official Fashion-MNIST test split (t10k), '
            'split=test, test_mode=True',
            evaluated='once, after the final epoch (final-epoch top-1)',
            batch_size=BATCH_SIZE,
            iterations_per_epoch=math.ceil(args.train_images / BATCH_SIZE),
            configs={m: method_setup(m)[0] for m in report.METHODS},
            method_options={m: method_setup(m)[1] for m in report.METHODS},
            model='ResNet_CIFAR depth 18, stem/base width 16 (stages 16-32-'
            '64-128), 1-channel 28x28 input, global pooling, linear head',
            schedule='SGD nesterov momentum 0.9, lr 0.1, weight decay 5e-4, '
            '1-epoch linear warm-up then cosine to 0 at the final epoch',
            augmentation='RandomCrop 28 padding 2, horizontal flip',
            bake=dict(omega=0.5, temperature=4.0, bake_weight=1.0,
                      num_instances=2, epoch_mode='images'),
            label_smooth_val=LABEL_SMOOTH_VAL,
            code_digest=code_digest(self.code_root),
            hyper_parameters_tuned='none (paper defaults, label smoothing '
            '0.1; epochs and subset fixed by the time budget)',
            threads_per_run=args.threads,
            concurrent_runs=args.jobs,
            machine=machine_info(),
            started=utc_now(),
            command='python benchmarks/accuracy.py ' +
            ' '.join(sys.argv[1:]),
        )

    def _load_or_create(self) -> dict:
        """Load the result file to resume, or start a new one."""
        config = self._study_config()
        path = self.args.results
        if osp.isfile(path):
            with open(path, encoding='utf-8') as f:
                results = json.load(f)
            report.check_results(results)
            old = results.get('config', {})
            for key in RESUME_KEYS:
                if json.dumps(old.get(key), sort_keys=True) != json.dumps(
                        config[key], sort_keys=True):
                    raise ValueError(
                        f'{path} was made with {key}={old.get(key)!r}, but '
                        f'this run has {key}={config[key]!r}; use another '
                        '--results file or delete it')
            return results
        return {'dataset': 'Fashion-MNIST', 'config': config, 'runs': []}

    def _save(self) -> None:
        """Write the results atomically (a crash never leaves half a file)."""
        save_json(self.args.results, self.results)

    def pending(self) -> List[Tuple[str, int]]:
        """The (method, seed) pairs still to run, seed-major (paired)."""
        done = {(r['method'], int(r['seed'])) for r in self.results['runs']}
        return [(m, s) for s in self.args.seeds for m in self.args.methods
                if (m, s) not in done]

    def command(self,
                method: str,
                seed: int,
                work_dir: str,
                config: Optional[str] = None,
                extra: Sequence[str] = ()) -> List[str]:
        """The ``tools/train.py`` command line of one run.

        Args:
            method (str): The method.
            seed (int): The seed.
            work_dir (str): The run's work dir.
            config (str, optional): A config to use instead of the
                method's (e.g. one that adds hooks to it).
            extra (Sequence[str]): More ``--cfg-options``, applied last.
        """
        method_config, options = method_setup(method)
        options = common_options(self.args.epochs, self.args.train_images,
                                 seed, self.args.data_root) + options
        return [
            sys.executable,
            osp.join(self.code_root, 'tools', 'train.py'),
            config or osp.join(self.code_root, method_config), '--work-dir',
            work_dir, '--cfg-options'
        ] + options + list(extra)

    def _train(self, method: str, seed: int, work_dir: str, log_path: str,
               config: Optional[str] = None,
               extra: Sequence[str] = ()) -> Tuple[float, float, int]:
        """Run one training; return (seconds, final top-1, iterations)."""
        args = self.args
        cmd = self.command(method, seed, work_dir, config, extra)
        try:
            seconds, _ = run_training(cmd, self.code_root, args.threads,
                                      log_path, args.run_timeout)
        except RuntimeError as exc:
            raise RuntimeError(f'{method} seed {seed}: {exc}') from exc
        top1 = final_top1(read_scalars(work_dir), args.epochs)
        iterations = checkpoint_iterations(work_dir, args.epochs)
        expected = args.epochs * math.ceil(args.train_images / BATCH_SIZE)
        if iterations != expected:
            raise RuntimeError(f'{method} seed {seed} ran {iterations} '
                               f'iterations, expected {expected}')
        return seconds, top1, iterations

    def run_one(self, method: str, seed: int) -> dict:
        """Train and evaluate one (method, seed); append it to the JSON."""
        args = self.args
        work_dir = tempfile.mkdtemp(prefix=f'acc_{method}_{seed}_')
        self._print(f'start {method} seed {seed}')
        try:
            seconds, top1, iterations = self._train(
                method, seed, work_dir,
                osp.join(args.log_dir, f'{method}_seed{seed}.log'))
            shutil.copy(
                scalars_path(work_dir),
                osp.join(args.log_dir, f'{method}_seed{seed}.json'))
            if seed == args.seeds[0] and args.keep_dir:
                os.makedirs(args.keep_dir, exist_ok=True)
                shutil.copy(
                    osp.join(work_dir, f'epoch_{args.epochs}.pth'),
                    osp.join(args.keep_dir, f'{method}_seed{seed}.pth'))
        finally:
            # Checkpoints add up; the scalar log was copied above.
            shutil.rmtree(work_dir, ignore_errors=True)
        run = dict(
            method=method,
            seed=seed,
            top1=top1,
            images_seen=args.epochs * images_per_epoch(
                method, args.train_images),
            iterations=iterations,
            train_seconds=round(seconds, 1))
        with self.lock:
            self.results['runs'].append(run)
            self._save()
        self._print(f'done {method} seed {seed}: top-1 {top1:.2f} '
                    f'({seconds:.0f} s)')
        return run

    def run_curves(self, method: str, seed: int) -> float:
        """One run validated every epoch, for the training curves.

        BAKE runs also carry ``SoftTargetVisualizationHook``; its pictures
        are copied to ``--figures-dir`` as ``soft_targets_epoch{N}.png``.
        Not part of the study's results (validation on the test images
        every epoch is for watching only).

        Returns:
            float: The final-epoch top-1 (equal to the study's run of the
            same method and seed when training is reproducible).
        """
        args = self.args
        work_dir = tempfile.mkdtemp(prefix=f'curves_{method}_{seed}_')
        self._print(f'start curves {method} seed {seed}')
        try:
            config = None
            if method == 'bake':
                config = osp.join(work_dir, 'with_hook.py')
                interval = args.hook_interval or max(1, args.epochs // 4)
                with open(config, 'w', encoding='utf-8') as f:
                    f.write(
                        f'_base_ = [{osp.join(self.code_root, BAKE_CONFIG)!r}]'
                        '\n'
                        "custom_imports = dict(imports=['mmbake', "
                        "'mmbake.engine'], allow_failed_imports=False)\n"
                        "custom_hooks = [dict(type='SoftTargetVisualization"
                        f"Hook', interval={interval}, num_batches=1, "
                        'max_images=16)]\n')
            seconds, top1, _ = self._train(
                method, seed, work_dir,
                osp.join(args.log_dir, f'curves_{method}_seed{seed}.log'),
                config=config, extra=['train_cfg.val_interval=1'])
            shutil.copy(
                scalars_path(work_dir),
                osp.join(args.log_dir, f'curves_{method}_seed{seed}.json'))
            if args.keep_dir:
                os.makedirs(args.keep_dir, exist_ok=True)
                shutil.copy(
                    osp.join(work_dir, f'epoch_{args.epochs}.pth'),
                    osp.join(args.keep_dir,
                             f'curves_{method}_seed{seed}.pth'))
            pictures = sorted(
                glob(osp.join(work_dir, 'soft_targets', '*_batch0.png')))
            if pictures and args.figures_dir:
                os.makedirs(args.figures_dir, exist_ok=True)
                for picture in pictures:
                    epoch = osp.basename(picture).split('_')[1]
                    shutil.copy(
                        picture,
                        osp.join(args.figures_dir,
                                 f'soft_targets_epoch{epoch}.png'))
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        self._print(f'done curves {method} seed {seed}: final top-1 '
                    f'{top1:.2f} ({seconds:.0f} s)')
        return top1

    def curves(self) -> None:
        """Curve runs for every --methods x --seeds, then the curves plot."""
        pairs = [(m, s) for s in self.args.seeds for m in self.args.methods]
        failures = run_in_parallel(self.run_curves, pairs, self.args.jobs,
                                   self._print)
        if failures:
            raise SystemExit(f'{len(failures)} curve run(s) failed')
        seed = self.args.seeds[0]
        logs = {}
        for method in report.METHODS:
            path = osp.join(self.args.log_dir,
                            f'curves_{method}_seed{seed}.json')
            if osp.isfile(path):
                logs[report.LABELS[method]] = path
        if logs and self.args.figures_dir:
            out = osp.join(self.args.figures_dir, 'curves_fashion_mnist.png')
            report.plot_curves(
                logs, out,
                math.ceil(self.args.train_images / BATCH_SIZE),
                title=f'Fashion-MNIST, first {self.args.train_images} '
                f'training images, seed {seed}; validation on the 10,000 '
                'test images')
            self._print(f'wrote {out}')

    def _print(self, message: str) -> None:
        say_stamped(self.lock, message)

    def run(self) -> None:
        """Run every pending pair, ``--jobs`` at a time, then report."""
        pending = self.pending()
        self._print(f'{len(pending)} runs to do: {pending}')
        with self.lock:
            self._save()
        failures = run_in_parallel(self.run_one, pending, self.args.jobs,
                                   self._print)
        changed = changed_since_snapshot(self.code_root)
        with self.lock:
            self.results['config']['changed_in_repo_since_snapshot'] = changed
            self._save()
        if changed:
            self._print(f'note: changed in the repository since the '
                        f'snapshot the runs used: {changed}')
        if self.results['runs']:
            paths = report.write_report(self.args.results,
                                        self.args.markdown, self.args.plot)
            if self.args.figure and osp.abspath(
                    self.args.figure) != osp.abspath(paths['plot']):
                shutil.copy(paths['plot'], self.args.figure)
            with open(paths['markdown'], encoding='utf-8') as f:
                print(f.read(), flush=True)
        if failures:
            raise SystemExit(f'{len(failures)} run(s) failed: {failures}')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    results_dir = osp.join(REPO_ROOT, 'benchmarks', 'results')
    parser = argparse.ArgumentParser(
        description='Fashion-MNIST accuracy study: vanilla CE, label '
        'smoothing and BAKE over paired seeds.')
    parser.add_argument('--methods', nargs='+', default=list(report.METHODS),
                        choices=report.METHODS)
    parser.add_argument('--seeds', nargs='+', type=int,
                        default=[0, 1, 2, 3, 4])
    parser.add_argument('--epochs', type=int, default=20)
    parser.add_argument(
        '--train-images',
        type=int,
        default=9984,
        help='train on the first N training images (default 9984 = 156 '
        'batches of 64: plain and class-aware epochs then hold exactly the '
        'same images and iterations)')
    parser.add_argument('--jobs', type=int, default=2,
                        help='trainings run at the same time')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch/OpenMP threads per training')
    add_output_args(parser, 'accuracy_fashion_mnist',
                    osp.join(results_dir, 'logs'))
    parser.add_argument(
        '--keep-dir',
        default=osp.join(REPO_ROOT, 'work_dirs', 'accuracy'),
        help='where the first seed\'s final checkpoints are kept ("" for '
        'nowhere)')
    parser.add_argument(
        '--snapshot-dir',
        default=osp.join(REPO_ROOT, 'work_dirs', 'accuracy', 'snapshot'),
        help='copy of configs/, mmbake/ and tools/ that every run executes '
        '(made on the first start, reused when resuming)')
    parser.add_argument('--run-timeout', type=float, default=3600,
                        help='seconds before one training is killed')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the pending commands and exit')
    parser.add_argument(
        '--curves',
        action='store_true',
        help='instead of the study: runs validated every epoch (BAKE with '
        'SoftTargetVisualizationHook) for the training curves and the '
        'soft-target pictures, written to --figures-dir')
    parser.add_argument('--hook-interval', type=int,
                        help='epochs between soft-target pictures in '
                        '--curves runs (default: epochs // 4)')
    parser.add_argument('--figures-dir',
                        default=osp.join(REPO_ROOT, 'docs', 'figures'))
    args = parser.parse_args(argv)
    for name in ('epochs', 'train_images', 'jobs', 'threads'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got '
                         f'{getattr(args, name)}')
    if args.epochs < 2:
        parser.error(f'--epochs must be >= 2 (one warm-up epoch, then the '
                     f'cosine phase), got {args.epochs}')
    if args.train_images > 60000:
        parser.error(f'--train-images must be <= 60000, got '
                     f'{args.train_images}')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    """Run the study from the command line."""
    args = parse_args(argv)
    study = Study(args)
    if args.curves:
        study.curves()
        return
    if args.dry_run:
        for method, seed in study.pending():
            print(' '.join(study.command(method, seed, '<tmp>')))
        return
    study.run()


if __name__ == '__main__':
    main()
