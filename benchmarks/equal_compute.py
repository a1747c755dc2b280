"""Does BAKE's gain survive equal compute? Fashion-MNIST, four arms.

The authors' small-scale recipe (github.com/yxgeee/BAKE, small_scale/)
counts a BAKE epoch as every training image being an anchor once, with
batches of 128 = 32 anchors x (1 + M = 3 same-class mates): a BAKE epoch
feeds four times the images and iterations of their baseline's epoch, for
the same number of epochs. This study puts that comparison next to a
baseline given the same iterations. Four arms, all on the first ``N``
training images, with the narrow ResNet-18 and the augmentation of
``configs/bake/resnet18_1xb64_fashion-mnist.py``, batch 128, SGD lr 0.1,
momentum 0.9, weight decay 1e-4, learning rate x0.1 at 50 % and 75 % of
each arm's iterations:

- ``ce_same_epochs``: plain cross-entropy, ``E`` epochs (the authors'
  baseline accounting);
- ``ce_same_iterations``: plain cross-entropy, ``4E`` epochs (the
  iterations and images of the BAKE arm);
- ``ls_same_iterations``: label smoothing 0.1, as ``ce_same_iterations``;
- ``bake_authors``: ``BAKEHead`` (omega 0.5, T 4, lambda 1) with
  ``ClassAwareBatchSampler(num_instances=4, epoch_mode='anchors')``,
  ``E`` epochs.

Every run is one ``tools/train.py`` subprocess (the real runner) on a
snapshot of the code, evaluated once, after its final epoch, on the 10,000
official test images with ``Accuracy`` and ``Calibration`` (top-1, NLL,
ECE); seeds are paired (``randomness.seed``). After each run the script
reads the final checkpoint back and checks that the run trained the epochs,
iterations, batch size, training subset and sampler its arm promises.

The settings are declared before the first run, into the result file::

    python benchmarks/equal_compute.py --declare --declare-note "..."

then the study runs (resumable: a rerun skips the runs already in the
result file) and writes the report::

    python benchmarks/equal_compute.py --jobs 2
    python benchmarks/equal_compute.py --report-only   # report again

Result file (``--results``)::

    {"dataset": "Fashion-MNIST",
     "config": {"declared": {...}, "protocol": {...}, "execution": {...}},
     "runs": [{"arm", "seed", "top1", "nll", "ece", "epochs", "iterations",
               "images_seen", "train_seconds", "cpu_seconds"}, ...]}

The arms' definitions and the checkpoint check live in
``equal_compute_arms.py``, the tables and plot in
``equal_compute_report.py``, the helpers shared with the accuracy study
(code snapshot, one training subprocess) in ``study_runs.py``.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import sys
import tempfile
import threading
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
# benchmarks/ is no package: its modules import each other from here.
import equal_compute_report  # noqa: E402
from equal_compute_arms import (ARMS, BAKE_ARGS, BASE_CONFIG,  # noqa: E402
                                LABEL_SMOOTH_VAL, NUM_BINS, NUM_INSTANCES,
                                TEST_IMAGES, arm_config, arm_epochs, arm_plan,
                                final_metrics, iterations_per_epoch,
                                verify_run)
from study_runs import (  # noqa: E402
    REPO_ROOT, add_output_args, changed_since_snapshot, checkpoint_meta,
    code_digest, git_state, machine_info, read_scalars, run_training,
    run_in_parallel, save_json, say_stamped, scalars_path, take_snapshot,
    utc_now)

# Seed-major order; within a seed the longest runs first, so that two jobs
# at a time finish a seed's pair together.
RUN_ORDER = ('ce_same_iterations', 'ls_same_iterations', 'bake_authors',
             'ce_same_epochs')


def declared_settings(args: argparse.Namespace) -> dict:
    """The ``declared`` part of the result file: fixed before any run."""
    return dict(
        train_images=args.train_images,
        epochs=args.epochs,
        seeds=list(args.seeds),
        batch_size=args.batch_size,
        arms=list(ARMS),
        rule='E = 200 and 5 seeds on a machine with a CUDA GPU (several '
        'trainings at a time); E = 60 and 3 seeds where only a 2-core CPU '
        'is available (two runs at a time, about an hour); if that does not '
        'fit, E is lowered, never the arms or the seeds',
        why='BAKE can only pay where the model can overfit: few images, '
        'long training. A pre-study (not part of this repository) on a '
        'validation split (training images 50,000-59,999, never the test '
        'set) with the Fashion twins at the same images and iterations, 960 '
        'images x 60 epochs, 3 seeds, saw CE 84.38, BAKE 84.65 (+0.27, 2 of '
        '3 seeds); at 10,000 images x 20 epochs the accuracy study '
        '(docs/accuracy.md) saw no gain',
        tuning='none: the authors\' small-scale hyper-parameters (batch '
        '128, M = 3, omega 0.5, T 4, lambda 1, SGD lr 0.1, momentum 0.9, '
        'weight decay 1e-4, x0.1 at 50 % and 75 %), label smoothing 0.1, the '
        'repository\'s Fashion-MNIST model and augmentation; no test image '
        'is looked at for anything but the final numbers, and nothing is '
        'changed after seeing them',
        note=args.declare_note or '',
        declared=utc_now())


def protocol(args: argparse.Namespace) -> dict:
    """Everything a run depends on, derived from the declared settings."""
    arms = {}
    for arm in ARMS:
        plan = arm_plan(arm, args.train_images, args.batch_size, args.epochs)
        arms[arm] = dict(
            plan,
            iterations_per_epoch=iterations_per_epoch(
                arm, args.train_images, args.batch_size),
            config=arm_config(arm, args.train_images, args.batch_size,
                              args.epochs))
    return dict(
        base_config=BASE_CONFIG,
        train_subset=f'the first {args.train_images} of the 60,000 official '
        'training images (train_dataloader.dataset.indices)',
        test_set=f'the {TEST_IMAGES:,} official test images (t10k; '
        'split=test, test_mode=True), evaluated once, after the final epoch '
        '(the train tool\'s validation); no best-epoch selection',
        model='ResNet_CIFAR depth 18, stem/base width 16 (stages 16-32-64-'
        '128), 1-channel 28x28 input, global pooling, linear head',
        augmentation='RandomCrop 28 padding 2, horizontal flip',
        schedule='SGD lr 0.1, momentum 0.9, weight decay 1e-4, no Nesterov, '
        'no warm-up; lr x0.1 after 50 % and 75 % of the arm\'s iterations '
        '(MultiStepLR, by_epoch=False)',
        bake=dict(BAKE_ARGS, num_instances=NUM_INSTANCES,
                  epoch_mode='anchors'),
        label_smooth_val=LABEL_SMOOTH_VAL,
        metrics=f'Accuracy top-1 (%), Calibration: NLL (nats) and ECE (%, '
        f'{NUM_BINS} equal-width bins on the top-1 probability)',
        seeds='randomness.seed=S for every arm, deterministic=False',
        arms=arms)


class Study:
    """Runs the (arm, seed) pairs and appends each result to the JSON.

    Args:
        args (argparse.Namespace): The parsed command line.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.results = self._load_declared()
        self.code_root = osp.join(args.work_dir, 'snapshot')
        self.config_dir = osp.join(args.work_dir, 'configs')

    def _load_declared(self) -> dict:
        """Load the result file; its declaration must match the arguments.

        Raises:
            ValueError: If there is no declaration, or it differs.
        """
        path = self.args.results
        if not osp.isfile(path):
            raise ValueError(f'{path} does not exist: declare the study '
                             'first (--declare), before any run')
        results = equal_compute_report.load_results(path)
        check_declaration(results, self.args)
        return results

    def _record_execution(self) -> None:
        """Snapshot the code and record where the runs execute.

        The first start copies the code now (replacing any older copy); a
        resumed study must run the same code: the snapshot is reused, and
        its digest is checked against the one recorded.
        """
        config = self.results['config']
        execution = config.get('execution')
        if execution is None:
            shutil.rmtree(self.code_root, ignore_errors=True)
        take_snapshot(self.code_root)
        digest = code_digest(self.code_root)
        if execution is not None:
            if execution['code_digest'] != digest:
                raise ValueError(
                    f'the snapshot {self.code_root} differs from the code '
                    f'the recorded runs used (digest {digest} != '
                    f'{execution["code_digest"]}); restore it, or start a '
                    'new result file')
            execution.setdefault('resumed', []).append(utc_now())
            return
        config['execution'] = dict(
            git_state(),
            code_digest=digest,
            snapshot='configs/, mmbake/ and tools/, copied when the study '
            'started; every run executes the copy',
            machine=machine_info(),
            concurrent_runs=self.args.jobs,
            threads_per_run=self.args.threads,
            started=utc_now(),
            command='python benchmarks/equal_compute.py ' +
            ' '.join(sys.argv[1:]))
        self._save()

    def _save(self) -> None:
        save_json(self.args.results, self.results)

    def pending(self) -> List[Tuple[str, int]]:
        """The (arm, seed) pairs still to run, seed-major."""
        done = {(r['arm'], int(r['seed'])) for r in self.results['runs']}
        return [(arm, seed) for seed in self.args.seeds for arm in RUN_ORDER
                if arm in self.args.arms and (arm, seed) not in done]

    def write_configs(self) -> Dict[str, str]:
        """Write the arm configs (inheriting the snapshot's base config).

        Returns:
            dict[str, str]: Arm -> config path.
        """
        args = self.args
        os.makedirs(self.config_dir, exist_ok=True)
        base = osp.join(self.code_root, BASE_CONFIG)
        paths = {}
        for arm in ARMS:
            paths[arm] = osp.join(self.config_dir, f'{arm}.py')
            with open(paths[arm], 'w', encoding='utf-8') as f:
                f.write(
                    arm_config(arm, args.train_images, args.batch_size,
                               args.epochs, base))
        return paths

    def command(self, config: str, seed: int, work_dir: str) -> List[str]:
        """The ``tools/train.py`` command line of one run."""
        options = [f'randomness.seed={seed}', 'randomness.deterministic=False']
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader'):
            options.append(f'{loader}.dataset.data_root={self.args.data_root}')
        return [
            sys.executable,
            osp.join(self.code_root, 'tools', 'train.py'), config,
            '--work-dir', work_dir, '--cfg-options'
        ] + options

    def run_one(self, arm: str, seed: int, config: str) -> dict:
        """Train, evaluate and verify one (arm, seed); append it."""
        args = self.args
        name = f'{arm}_seed{seed}'
        work_dir = tempfile.mkdtemp(prefix=f'eqc_{name}_')
        self._print(f'start {name}')
        try:
            log_path = osp.join(args.log_dir, f'{name}.log')
            try:
                seconds, cpu_seconds = run_training(
                    self.command(config, seed, work_dir), self.code_root,
                    args.threads, log_path, args.run_timeout)
            except RuntimeError as exc:
                raise RuntimeError(f'{name}: {exc}') from exc
            epochs = arm_epochs(arm, args.epochs)
            metrics = final_metrics(read_scalars(work_dir), epochs)
            counts = verify_run(
                checkpoint_meta(osp.join(work_dir, f'epoch_{epochs}.pth')),
                arm, seed, args.train_images, args.batch_size, args.epochs)
            shutil.copy(scalars_path(work_dir),
                        osp.join(args.log_dir, f'{name}.json'))
        finally:
            # Checkpoints add up; the scalar log was copied above.
            shutil.rmtree(work_dir, ignore_errors=True)
        run = dict(
            arm=arm, seed=seed, **metrics, **counts,
            train_seconds=round(seconds, 1),
            cpu_seconds=round(cpu_seconds, 1))
        with self.lock:
            self.results['runs'].append(run)
            self._save()
        self._print(f'done {name}: top-1 {metrics["top1"]:.2f}, NLL '
                    f'{metrics["nll"]:.4f}, ECE {metrics["ece"]:.2f} '
                    f'({counts["iterations"]} iterations, {seconds:.0f} s, '
                    f'{cpu_seconds:.0f} CPU s)')
        return run

    def _print(self, message: str) -> None:
        say_stamped(self.lock, message)

    def run(self) -> None:
        """Run every pending pair, ``--jobs`` at a time, then report."""
        pending = self.pending()
        self._print(f'{len(pending)} runs to do: {pending}')
        self._record_execution()
        configs = self.write_configs()
        failures = run_in_parallel(
            self.run_one, [(arm, seed, configs[arm]) for arm, seed in pending],
            self.args.jobs, self._print)
        with self.lock:
            execution = self.results['config']['execution']
            execution['changed_in_repo_since_snapshot'] = \
                changed_since_snapshot(self.code_root)
            if pending and not failures:
                execution['finished'] = utc_now()
            self._save()
        if self.results['runs']:
            write_report(self.args)
        if failures:
            raise SystemExit(f'{len(failures)} run(s) failed: {failures}')


def check_declaration(results: dict, args: argparse.Namespace) -> None:
    """Refuse a command line that departs from the declared study.

    Args:
        results (dict): The result file.
        args (argparse.Namespace): The command line.

    Raises:
        ValueError: If the file holds no declaration, or ``N``, ``E``,
            ``B`` or the arms differ, or a seed was not declared.
    """
    declared = results.get('config', {}).get('declared')
    if not declared:
        raise ValueError(f'{args.results} holds no declaration; declare '
                         'the study first (--declare)')
    for key in ('train_images', 'epochs', 'batch_size'):
        if declared[key] != getattr(args, key):
            raise ValueError(
                f'{args.results} declares {key}={declared[key]}, but this '
                f'command has {key}={getattr(args, key)}; declared settings '
                'never change (use another --results file for another study)')
    if list(declared['arms']) != list(ARMS):
        raise ValueError(f'{args.results} declares the arms '
                         f'{declared["arms"]}, this script runs {ARMS}')
    stored = results['config'].get('protocol')
    if _normalized(stored) != _normalized(protocol(args)):
        raise ValueError(
            f'the protocol in {args.results} differs from what this script '
            'would run now (model, schedule, arm configs, metrics); declared '
            'settings never change: run the script version that declared '
            'it, or declare a new study in another file')
    extra = sorted(set(args.seeds) - set(declared['seeds']))
    if extra:
        raise ValueError(f'seeds {extra} were not declared in '
                         f'{args.results} (declared: {declared["seeds"]})')


def _normalized(value: object) -> str:
    """JSON text with sorted keys (tuples and lists alike)."""
    return json.dumps(json.loads(json.dumps(value)), sort_keys=True)


def declare(args: argparse.Namespace) -> dict:
    """Write a new result file holding only the declaration.

    Raises:
        ValueError: If the result file exists already.
    """
    if osp.exists(args.results):
        raise ValueError(f'{args.results} exists: a declaration is written '
                         'once, before any run; delete the file to declare '
                         'anew (only if no run has been made)')
    results = {
        'dataset': 'Fashion-MNIST',
        'config': dict(declared=declared_settings(args),
                       protocol=protocol(args)),
        'runs': []
    }
    save_json(args.results, results)
    return results


def write_report(args: argparse.Namespace) -> Dict[str, str]:
    """Table and plot from the result file; print the table."""
    paths = equal_compute_report.write_report(args.results, args.markdown,
                                              args.plot)
    if args.figure and osp.abspath(args.figure) != osp.abspath(
            paths['plot']):
        os.makedirs(osp.dirname(osp.abspath(args.figure)), exist_ok=True)
        shutil.copy(paths['plot'], args.figure)
    with open(paths['markdown'], encoding='utf-8') as f:
        print(f.read(), flush=True)
    return paths


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line."""
    results_dir = osp.join(REPO_ROOT, 'benchmarks', 'results')
    parser = argparse.ArgumentParser(
        description='Fashion-MNIST: BAKE with the authors\' epoch '
        'accounting beside same-iteration controls, top-1 and calibration.')
    parser.add_argument('--train-images', type=int, default=1024,
                        help='N: train on the first N training images '
                        '(default 1024 = 8 batches of 128)')
    parser.add_argument('--epochs', type=int, default=60,
                        help='E: epochs of ce_same_epochs and bake_authors; '
                        'the same-iteration arms train 4E')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--batch-size', type=int, default=128,
                        help='B, images per iteration (default 128, the '
                        'authors\'); a multiple of 4 dividing N')
    parser.add_argument('--arms', nargs='+', choices=ARMS,
                        default=list(ARMS),
                        help='run only these arms (all are declared)')
    parser.add_argument('--jobs', type=int, default=2,
                        help='trainings run at the same time')
    parser.add_argument('--threads', type=int,
                        help='torch/OpenMP threads per training (default: '
                        'CPU cores // jobs)')
    add_output_args(parser, 'equal_compute_fashion_mnist',
                    osp.join(results_dir, 'logs', 'equal_compute'))
    parser.add_argument(
        '--work-dir',
        default=osp.join(REPO_ROOT, 'work_dirs', 'equal_compute'),
        help='holds the code snapshot every run executes (made on the '
        'first start, reused when resuming) and the arm configs')
    parser.add_argument('--run-timeout', type=float, default=4 * 3600,
                        help='seconds before one training is killed')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--declare', action='store_true',
                      help='write the declaration into a new result file '
                      'and exit (before any run)')
    mode.add_argument('--report-only', action='store_true',
                      help='write the table and plot from the result file '
                      'and exit')
    mode.add_argument('--dry-run', action='store_true',
                      help='print the pending runs\' commands and exit')
    parser.add_argument('--declare-note',
                        help='with --declare: how E was chosen (timing)')
    args = parser.parse_args(argv)
    for name in ('train_images', 'epochs', 'batch_size', 'jobs'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got '
                         f'{getattr(args, name)}')
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    elif args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    if args.batch_size % NUM_INSTANCES:
        parser.error(f'--batch-size must be a multiple of {NUM_INSTANCES} '
                     f'(anchors x {NUM_INSTANCES}), got {args.batch_size}')
    if args.train_images % args.batch_size or args.train_images > 60000:
        parser.error('--train-images must be a multiple of --batch-size '
                     '(every batch full) and at most 60000, got '
                     f'{args.train_images}')
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f'--seeds must be distinct, got {args.seeds}')
    try:
        for arm in ARMS:
            arm_plan(arm, args.train_images, args.batch_size, args.epochs)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: Optional[List[str]] = None) -> None:
    """Declare, run or report the study from the command line."""
    args = parse_args(argv)
    if args.declare:
        results = declare(args)
        print(json.dumps(results['config']['declared'], indent=1))
        print(f'Declared in {args.results}')
        return
    if args.report_only:
        write_report(args)
        return
    study = Study(args)
    if args.dry_run:
        for arm, seed in study.pending():
            print(' '.join(
                study.command(
                    osp.join(study.config_dir, f'{arm}.py'), seed, '<tmp>')))
        return
    study.run()


if __name__ == '__main__':
    main()
