"""Run a declared training study through the real runner, resumably.

A study is declared in one small Python file (``benchmarks/studies/``)
that defines ``STUDY``, a dict with:

- ``name``: the results are ``benchmarks/results/<name>.json``;
- ``question``: what the study answers; any other text keys (``why``,
  ``tuning``, ...) are kept with it;
- ``arms``: arm name -> ``dict(config=PATH, options=[KEY=VALUE, ...])``, a
  config of this repository plus ``--cfg-options`` of ``tools/train.py``;
- ``runs``: one dict per run, ``arm``, ``seed``, ``group`` (the condition
  the arms are compared in, e.g. a number of training images; None for a
  single one), ``epochs``, ``iterations`` (what the final checkpoint must
  show) and ``options`` (its own ``--cfg-options``);
- ``compare``: ``[arm, baseline]`` pairs for the paired report;
- ``record_scores`` (optional): also keep each run's reliability bins, from
  the test tool's predictions of the final checkpoint.

Every run is one ``tools/train.py`` process (the real runner), seeded with
``randomness.seed``; the final checkpoint is read back and must show the
declared epochs, iterations and seed, and every declared option in its
config. Each verified run is appended to the results JSON at once, so an
interrupted study resumes where it stopped. The results file keeps the
declaration and a digest of the code: a changed declaration or changed code
is refused (declare a new study instead). Run a long study from a clone of
its own (``git worktree add``), so that editing the working tree does not
reach the runs still to come::

    python benchmarks/study.py benchmarks/studies/budget_map_fashion_mnist.py
    python benchmarks/report.py \
        benchmarks/results/budget_map_fashion_mnist.json
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import platform
import runpy
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from glob import glob
from typing import List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CODE_PATHS = ('configs', 'mmbake', 'tools', 'benchmarks/configs')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
METRICS = {
    'accuracy/top1': 'top1',
    'calibration/nll': 'nll',
    'calibration/ece': 'ece',
    'calibration/confidence_gap': 'confidence_gap'
}
RUN_KEYS = ('arm', 'seed', 'group', 'epochs', 'iterations', 'options')


def load_study(path: str) -> dict:
    """Read a declaration and check its shape.

    Args:
        path (str): A Python file defining ``STUDY``.

    Returns:
        dict: ``STUDY`` as plain JSON data (tuples become lists).

    Raises:
        ValueError: Naming what is missing or wrong.
    """
    study = runpy.run_path(path).get('STUDY')
    if not isinstance(study, dict):
        raise ValueError(f'{path} must define a dict STUDY')
    study = json.loads(json.dumps(study))
    for key in ('name', 'question', 'arms', 'runs', 'compare'):
        if key not in study:
            raise ValueError(f'{path}: STUDY needs the key {key!r}')
    for arm, spec in study['arms'].items():
        if set(spec) != {'config', 'options'}:
            raise ValueError(f'{path}: arm {arm!r} must have exactly the '
                             f'keys config and options, got {sorted(spec)}')
    seen = set()
    for run in study['runs']:
        if set(run) != set(RUN_KEYS) or run['arm'] not in study['arms']:
            raise ValueError(f'{path}: a run needs exactly the keys '
                             f'{RUN_KEYS} and a declared arm, got {run}')
        if str(run_key(run)) in seen:
            raise ValueError(f'{path}: run declared twice: {run_key(run)}')
        seen.add(str(run_key(run)))
    for pair in study['compare']:
        if len(pair) != 2 or not set(pair) <= set(study['arms']):
            raise ValueError(f'{path}: compare holds [arm, baseline] pairs '
                             f'of declared arms, got {pair}')
    return study


def run_key(run: dict) -> list:
    """What identifies a run: arm, group and seed."""
    return [run['arm'], run['group'], run['seed']]


def run_name(run: dict) -> str:
    """A file-name-safe name, e.g. ``bake_default_1024_seed0``."""
    group = '' if run['group'] is None else f'_{run["group"]}'
    return f'{run["arm"]}{group}_seed{run["seed"]}'


def code_digest(root: str = REPO_ROOT) -> str:
    """SHA-256 over the names and bytes of the code a run executes."""
    digest = hashlib.sha256()
    for rel in CODE_PATHS:
        for folder, dirs, names in os.walk(osp.join(root, rel)):
            dirs[:] = sorted(
                d for d in dirs if d not in ('__pycache__', '.mim'))
            for name in sorted(n for n in names if not n.endswith('.pyc')):
                path = osp.join(folder, name)
                digest.update(osp.relpath(path, root).encode())
                with open(path, 'rb') as f:
                    digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def code_state() -> dict:
    """The commit, whether the code paths differ from it, and the digest."""

    def git(*args: str) -> str:
        return subprocess.run(['git', *args],
                              cwd=REPO_ROOT,
                              text=True,
                              capture_output=True).stdout.strip()

    return dict(
        commit=git('rev-parse', 'HEAD') or None,
        uncommitted=git('status', '--porcelain', '--',
                        *CODE_PATHS).splitlines(),
        digest=code_digest())


def machine() -> dict:
    """CPU count, processor, platform, Python, torch and GPU of this host."""
    import torch
    return dict(
        cpus=os.cpu_count(),
        processor=platform.processor(),
        platform=platform.platform(),
        python=platform.python_version(),
        torch=torch.__version__,
        gpu=torch.cuda.is_available() and torch.cuda.get_device_name())


def save(path: str, data: dict) -> None:
    """Write the results JSON atomically."""
    from mmbake.utils import write_atomically
    text = json.dumps(data, indent=1) + '\n'
    write_atomically(lambda f: f.write(text.encode()), path)


def open_results(study: dict, path: str) -> dict:
    """Load the results of ``study``, or start them.

    Raises:
        ValueError: If the file holds another declaration, or its runs
            were made with other code than the working tree holds now.
    """
    if not osp.isfile(path):
        return dict(
            declaration=study, code=code_state(), machine=machine(), runs=[])
    with open(path, encoding='utf-8') as f:
        results = json.load(f)
    if results['declaration'] != study:
        changed = sorted(
            k for k in set(study) | set(results['declaration'])
            if study.get(k) != results['declaration'].get(k))
        raise ValueError(f'{path} was declared differently (keys {changed} '
                         'differ); a declaration never changes: declare a '
                         'new study under another name')
    if results['runs'] and results['code']['digest'] != code_digest():
        raise ValueError(f'the code under {CODE_PATHS} differs from the '
                         f'code of the runs in {path} (commit '
                         f'{results["code"]["commit"]}); resume from that '
                         'code, or declare a new study')
    if not results['runs']:
        results['code'] = code_state()
    return results


def parse_option(option: str) -> tuple:
    """``KEY=VALUE`` -> (key parts, value as ``--cfg-options`` parses it)."""
    from mmengine.config import DictAction
    key, value = option.split('=', 1)
    return key.split('.'), DictAction._parse_iterable(value)


def config_value(cfg: dict, parts: List[str]) -> object:
    """The value at a dotted key of a config (list items by index)."""
    for part in parts:
        cfg = cfg[int(part)] if isinstance(cfg, (list, tuple)) else cfg[part]
    return cfg


def verify(ckpt_path: str, run: dict, options: List[str]) -> dict:
    """Check a final checkpoint against its run's declaration.

    Args:
        ckpt_path (str): The run's final checkpoint (written by this study,
            so unpickled in full).
        run (dict): The declared run.
        options (list[str]): Every ``--cfg-options`` the run was given.

    Returns:
        dict: ``epochs``, ``iterations`` and ``images_seen`` (iterations
        times the batch size: the studies use full batches only).

    Raises:
        RuntimeError: Naming every difference.
    """
    import torch
    from mmengine.config import Config
    meta = torch.load(
        ckpt_path, map_location='cpu', weights_only=False)['meta']
    cfg = Config.fromstring(meta['cfg'], '.py').to_dict()
    found = dict(
        epochs=meta['epoch'], iterations=meta['iter'], seed=meta['seed'])
    wrong = [
        f'{k} {found[k]} (declared {run[k]})' for k in found
        if found[k] != run[k]
    ]
    for option in options:
        parts, value = parse_option(option)
        try:
            trained = config_value(cfg, parts)
        except (KeyError, IndexError, TypeError):
            trained = '<missing>'
        if json.dumps(trained) != json.dumps(value):
            wrong.append(f'{".".join(parts)}={trained!r} (declared {value!r})')
    if wrong:
        raise RuntimeError(f'{run_name(run)} did not train as declared: ' +
                           '; '.join(wrong))
    batch = cfg['train_dataloader']['batch_size']
    return dict(
        epochs=found['epochs'],
        iterations=found['iterations'],
        images_seen=found['iterations'] * batch)


def final_metrics(work_dir: str, epochs: int) -> dict:
    """The metrics logged by the validation after the final epoch."""
    paths = glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(paths[0], encoding='utf-8') as f:
        records = [json.loads(line) for line in f if line.strip()]
    last = [r for r in records if 'accuracy/top1' in r][-1:]
    if not last or last[0]['step'] != epochs:
        raise RuntimeError(f'no validation after epoch {epochs} in {paths}')
    return {
        name: last[0][key]
        for key, name in METRICS.items() if key in last[0]
    }


def reliability(pickle_path: str, num_bins: int = 15) -> dict:
    """Reliability bins (and top-1) of the test tool's predictions."""
    import mmengine
    import numpy as np
    import torch

    from mmbake.evaluation import reliability_bins
    samples = mmengine.load(pickle_path)
    scores = torch.stack([s['pred_score'] for s in samples]).double()
    labels = torch.cat([s['gt_label'] for s in samples])
    confidence, top1 = scores.max(dim=1)
    correct = (top1 == labels).numpy()
    bins = reliability_bins(confidence.numpy(), correct, num_bins)
    return dict(
        top1=100.0 * float(np.mean(correct)),
        bins={
            k: v.tolist()
            for k, v in bins.items()
        })


class Study:
    """Runs the pending runs of a declaration, ``jobs`` at a time.

    Args:
        study (dict): The declaration (:func:`load_study`).
        args (argparse.Namespace): The command line.
    """

    def __init__(self, study: dict, args: argparse.Namespace) -> None:
        self.study, self.args = study, args
        self.lock = threading.Lock()
        self.results = open_results(study, args.results)

    def pending(self) -> List[dict]:
        done = [r['key'] for r in self.results['runs']]
        return [r for r in self.study['runs'] if run_key(r) not in done]

    def options(self, run: dict) -> List[str]:
        """The declared ``--cfg-options`` of a run, seed included."""
        return (self.study['arms'][run['arm']]['options'] + run['options'] +
                [f'randomness.seed={run["seed"]}'])

    def command(self, tool: str, run: dict, *args: str) -> List[str]:
        data = [
            f'{loader}.dataset.data_root={self.args.data_root}'
            for loader in LOADERS
        ] if self.args.data_root else []
        config = osp.join(REPO_ROOT, self.study['arms'][run['arm']]['config'])
        return [
            sys.executable,
            osp.join(REPO_ROOT, 'tools', tool), config, *args, '--cfg-options',
            *self.options(run), *data
        ]

    def say(self, message: str) -> None:
        with self.lock:
            print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)

    def execute(self, cmd: List[str], log_path: str) -> float:
        """Run one tool process; return the CPU seconds it used."""
        # This clone's mmbake first, whichever one is installed.
        path = os.pathsep.join(
            p for p in (REPO_ROOT, os.environ.get('PYTHONPATH')) if p)
        env = dict(
            os.environ,
            PYTHONPATH=path,
            OMP_NUM_THREADS=str(self.args.threads),
            MKL_NUM_THREADS=str(self.args.threads))
        with open(log_path, 'a', encoding='utf-8') as log:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f'exit {proc.returncode}; see {log_path}')
        return usage.ru_utime + usage.ru_stime

    def run_one(self, run: dict) -> None:
        """Train, verify and record one run."""
        name = run_name(run)
        log_path = osp.join(self.args.log_dir, f'{name}.log')
        os.makedirs(self.args.log_dir, exist_ok=True)
        if osp.exists(log_path):
            os.remove(log_path)
        work_dir = tempfile.mkdtemp(prefix=f'study_{name}_')
        self.say(f'start {name}')
        start = time.perf_counter()
        try:
            cpu = self.execute(
                self.command('train.py', run, '--work-dir', work_dir),
                log_path)
            seconds = time.perf_counter() - start
            record = dict(
                key=run_key(run),
                name=name,
                arm=run['arm'],
                group=run['group'],
                seed=run['seed'],
                **final_metrics(work_dir, run['epochs']))
            ckpt = osp.join(work_dir, f'epoch_{run["epochs"]}.pth')
            record.update(verify(ckpt, run, self.options(run)))
            if self.study.get('record_scores'):
                scores = osp.join(work_dir, 'scores.pkl')
                self.execute(
                    self.command('test.py', run, ckpt, '--out', scores),
                    log_path)
                rel = reliability(scores)
                if abs(rel['top1'] - record['top1']) > 0.02:
                    raise RuntimeError(f'{name}: the test tool gives top-1 '
                                       f'{rel["top1"]}, the training '
                                       f'{record["top1"]}')
                record['reliability'] = rel['bins']
            shutil.copy(
                glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))[0],
                osp.join(self.args.log_dir, f'{name}.json'))
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        record.update(
            train_seconds=round(seconds, 1), cpu_seconds=round(cpu, 1))
        with self.lock:
            self.results['runs'].append(record)
            save(self.args.results, self.results)
        self.say(f'done {name}: ' +
                 ', '.join(f'{k} {record[k]:.3f}'
                           for k in METRICS.values() if k in record) +
                 f' ({record["iterations"]} iterations, {seconds:.0f} s)')

    def run(self) -> int:
        """Run what is pending; return the number of failed runs."""
        pending = self.pending()
        self.say(f'{len(pending)} of {len(self.study["runs"])} runs to do')
        save(self.args.results, self.results)
        failures = 0
        with ThreadPoolExecutor(max_workers=self.args.jobs) as pool:
            for run, future in [(r, pool.submit(self.run_one, r))
                                for r in pending]:
                try:
                    future.result()
                except Exception as exc:  # noqa: B902 - the others go on
                    failures += 1
                    self.say(f'FAILED {run_name(run)}: {exc}')
        return failures


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('study', help='declaration file (benchmarks/studies)')
    parser.add_argument(
        '--jobs',
        type=int,
        default=2,
        help='runs at the same time (default 2)')
    parser.add_argument(
        '--threads',
        type=int,
        help='torch threads per run (default cores // jobs)')
    parser.add_argument('--data-root', help='data_root of the three loaders')
    parser.add_argument(
        '--results', help='default benchmarks/results/'
        '<name>.json')
    parser.add_argument(
        '--log-dir', help='default benchmarks/results/logs/'
        '<name>')
    parser.add_argument(
        '--dry-run',
        action='store_true',
        help='print the pending training commands and exit')
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error('--jobs and --threads must be >= 1')
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    if args.data_root:
        args.data_root = osp.abspath(args.data_root)
    return args


def main(argv: Optional[List[str]] = None) -> None:
    """Run (or list) the pending runs of a study."""
    args = parse_args(argv)
    sys.path.insert(0, REPO_ROOT)  # this clone's mmbake, as in the runs
    study = load_study(args.study)
    results_dir = osp.join(REPO_ROOT, 'benchmarks', 'results')
    args.results = args.results or osp.join(results_dir,
                                            f'{study["name"]}.json')
    args.log_dir = args.log_dir or osp.join(results_dir, 'logs', study['name'])
    try:
        runner = Study(study, args)
    except ValueError as exc:
        raise SystemExit(f'error: {exc}')
    if args.dry_run:
        for run in runner.pending():
            print(' '.join(
                runner.command('train.py', run, '--work-dir', '<tmp>')))
        return
    failures = runner.run()
    if failures:
        raise SystemExit(f'{failures} run(s) failed; rerun to retry them')


if __name__ == '__main__':
    main()
