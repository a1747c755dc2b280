"""Run a declared training study through the real runner, resumably.

Each run of a declaration (``benchmarks/studies/``) is one
``tools/train.py`` process, verified from its final checkpoint and appended
to ``benchmarks/results/<name>.json`` at once (docs/accuracy.md)::

    python benchmarks/study.py benchmarks/studies/budget_map_fashion_mnist.py
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
    """Read a declaration and check its shape (ValueError if wrong).

    Args:
        path (str): A Python file defining ``STUDY``.

    Returns:
        dict: ``STUDY`` as plain JSON data (tuples become lists).
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
    calibrate = study.get('calibrate', dict(config='', options=[]))
    if not isinstance(calibrate, dict) or \
            set(calibrate) != {'config', 'options'}:
        raise ValueError(f'{path}: calibrate must be a dict with exactly '
                         f'the keys config and options, got {calibrate!r}')
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
            dirs[:] = sorted(set(dirs) - {'__pycache__', '.mim'})
            for name in sorted(n for n in names if not n.endswith('.pyc')):
                path = osp.join(folder, name)
                digest.update(osp.relpath(path, root).encode())
                with open(path, 'rb') as f:
                    digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def code_state() -> dict:
    """The commit, whether the code paths differ from it, and the digest."""

    def git(*args: str) -> str:
        kwargs = dict(cwd=REPO_ROOT, text=True, capture_output=True)
        return subprocess.run(['git', *args], **kwargs).stdout.strip()

    status = git('status', '--porcelain', '--', *CODE_PATHS)
    return dict(
        commit=git('rev-parse', 'HEAD') or None,
        uncommitted=status.splitlines(),
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
    """Load the results of ``study`` (ValueError if declared or run
    otherwise), or start them."""
    if not osp.isfile(path):
        return dict(
            declaration=study, code=code_state(), machine=machine(), runs=[])
    with open(path, encoding='utf-8') as f:
        results = json.load(f)
    old = results['declaration']
    if old != study:
        changed = sorted(
            k for k in set(study) | set(old) if study.get(k) != old.get(k))
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
        ckpt_path (str): The run's final checkpoint (unpickled in full).
        run (dict): The declared run.
        options (list[str]): Every ``--cfg-options`` the run was given.

    Returns:
        dict: ``epochs``, ``iterations`` and ``images_seen`` (iterations
        times the batch size); a RuntimeError names every difference.
    """
    import torch
    from mmengine.config import Config
    meta = torch.load(
        ckpt_path, map_location='cpu', weights_only=False)['meta']
    cfg = Config.fromstring(meta['cfg'], '.py').to_dict()
    found = dict(epochs=meta['epoch'], iterations=meta['iter'])
    wrong = [
        f'{k} {v} (declared {run[k]})'
        for k, v in dict(found, seed=meta['seed']).items() if v != run[k]
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
    return dict(found, images_seen=found['iterations'] * batch)


def scalars(work_dir: str) -> str:
    """The scalar log of the run in ``work_dir``."""
    return glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))[0]


def final_metrics(work_dir: str, epochs: int) -> dict:
    """The metrics logged by the validation after the final epoch."""
    path = scalars(work_dir)
    with open(path, encoding='utf-8') as f:
        records = [json.loads(line) for line in f if line.strip()]
    last = [r for r in records if 'accuracy/top1' in r][-1:]
    if not last or last[0]['step'] != epochs:
        raise RuntimeError(f'no validation after epoch {epochs} in {path}')
    return {v: last[0][k] for k, v in METRICS.items() if k in last[0]}


def scored(pickle_path: str, num_bins: int = 15) -> dict:
    """Top-1, calibration metrics and reliability bins of the test tool's
    predictions."""
    import mmengine
    import torch

    from mmbake.evaluation import Calibration, reliability_bins
    samples = mmengine.load(pickle_path)
    scores = torch.stack([s['pred_score'] for s in samples]).double()
    labels = torch.cat([s['gt_label'] for s in samples])
    confidence, predicted = scores.max(dim=1)
    correct = (predicted == labels).numpy()
    bins = reliability_bins(confidence.numpy(), correct, num_bins)
    result = Calibration.calculate(scores, labels, num_bins)
    result.update(top1=100.0 * float(correct.mean()))
    return dict(result, bins={k: v.tolist() for k, v in bins.items()})


class Study:
    """Runs the pending runs of a declaration, ``args.jobs`` at a time."""

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

    def command(self,
                tool: str,
                run: dict,
                *args: str,
                config: Optional[str] = None,
                options: Optional[List[str]] = None) -> List[str]:
        """A tool's command line for ``run``: its arm's config, ``args``,
        the run's options and ``--data-root`` as ``--cfg-options``.
        ``config`` and ``options`` (a ``calibrate`` declaration) replace the
        arm's config and the ``--data-root`` options."""
        if config is None:
            config = self.study['arms'][run['arm']]['config']
            root = self.args.data_root
            options = [f'{x}.dataset.data_root={root}'
                       for x in LOADERS] if root else []
        cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', tool)]
        cmd += [osp.join(REPO_ROOT, config), *args, '--cfg-options']
        return cmd + [*self.options(run), *options]

    def say(self, message: str) -> None:
        with self.lock:
            print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)

    def execute(self, cmd: List[str], log_path: str) -> float:
        """Run one tool process; return the CPU seconds it used."""
        # This clone's mmbake first, whichever one is installed.
        path = os.pathsep.join(
            p for p in (REPO_ROOT, os.environ.get('PYTHONPATH')) if p)
        env = dict(os.environ, PYTHONPATH=path)
        for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
            env[var] = str(self.args.threads)
        with open(log_path, 'a', encoding='utf-8') as log:
            out = dict(stdout=log, stderr=subprocess.STDOUT)
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, **out)
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f'exit {proc.returncode}; see {log_path}')
        return usage.ru_utime + usage.ru_stime

    def test(self, run: dict, ckpt: str, log_path: str, top1: float) -> dict:
        """:func:`scored` of the test tool's predictions with ``ckpt``,
        whose top-1 must be ``top1`` (RuntimeError otherwise)."""
        scores = osp.splitext(ckpt)[0] + '_scores.pkl'
        self.execute(
            self.command('test.py', run, ckpt, '--out', scores), log_path)
        result = scored(scores)
        if abs(result['top1'] - top1) > 0.02:
            raise RuntimeError(f'{run_name(run)}: the test tool gives top-1 '
                               f'{result["top1"]} with {ckpt}, expected '
                               f'{top1}')
        return result

    def calibrate(self, run: dict, ckpt: str, log_path: str,
                  record: dict) -> dict:
        """Fit and fold a temperature with ``calibrate.py`` on the
        declaration's held-out images; test the folded checkpoint.

        Returns:
            dict: ``temperature``, the test metrics after scaling
            (``<metric>_ts``, top-1 unchanged or RuntimeError), their
            reliability bins and the fit's metrics on the held-out images.
        """
        import torch
        spec = self.study['calibrate']
        out = osp.splitext(ckpt)[0] + '_calibrated.pth'
        self.execute(
            self.command('analysis_tools/calibrate.py', run, ckpt, '--out',
                         out, **spec), log_path)
        fit = torch.load(out, weights_only=True)['meta']['calibration']
        after = self.test(run, out, log_path, record['top1'])
        names = ('top1', 'nll', 'ece', 'confidence_gap')
        found = {f'{m}_ts': after[m] for m in names}
        heldout = dict(images=fit['num_images'], before=fit['before'])
        heldout.update(after=fit['after'])
        found.update(
            temperature=fit['temperature'], reliability_ts=after['bins'])
        return dict(found, heldout=heldout)

    def run_one(self, run: dict) -> None:
        """Train, verify and record one run."""
        name, log_dir = run_name(run), self.args.log_dir
        log_path = osp.join(log_dir, f'{name}.log')
        os.makedirs(log_dir, exist_ok=True)
        open(log_path, 'w').close()  # this attempt's log only
        work_dir = tempfile.mkdtemp(prefix=f'study_{name}_')
        self.say(f'start {name}')
        start = time.perf_counter()
        try:
            train = self.command('train.py', run, '--work-dir', work_dir)
            cpu = self.execute(train, log_path)
            seconds = time.perf_counter() - start
            record = dict(key=run_key(run), name=name)
            record.update({k: run[k] for k in ('arm', 'group', 'seed')})
            record.update(final_metrics(work_dir, run['epochs']))
            ckpt = osp.join(work_dir, f'epoch_{run["epochs"]}.pth')
            record.update(verify(ckpt, run, self.options(run)))
            if self.study.get('record_scores'):
                rel = self.test(run, ckpt, log_path, record['top1'])
                record['reliability'] = rel['bins']
            if self.study.get('calibrate'):
                record.update(self.calibrate(run, ckpt, log_path, record))
            shutil.copy(scalars(work_dir), osp.join(log_dir, f'{name}.json'))
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


def main(argv: Optional[List[str]] = None) -> None:
    """Run (or list) the pending runs of a study."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add = parser.add_argument
    add('study', help='declaration file (benchmarks/studies)')
    add('--jobs', type=int, default=2, help='runs at the same time')
    add('--threads', type=int, help='threads per run (default cores // jobs)')
    add('--data-root', help='data_root of the three loaders')
    add('--results', help='default benchmarks/results/<name>.json')
    add('--log-dir', help='default benchmarks/results/logs/<name>')
    add('--dry-run', action='store_true', help='print the pending commands')
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error('--jobs and --threads must be >= 1')
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    if args.data_root:
        args.data_root = osp.abspath(args.data_root)
    sys.path.insert(0, REPO_ROOT)  # this clone's mmbake, as in the runs
    study = load_study(args.study)
    results, name = osp.join(REPO_ROOT, 'benchmarks', 'results'), study['name']
    args.results = args.results or osp.join(results, f'{name}.json')
    args.log_dir = args.log_dir or osp.join(results, 'logs', name)
    try:
        runner = Study(study, args)
    except ValueError as exc:
        raise SystemExit(f'error: {exc}')
    if args.dry_run:
        for run in runner.pending():
            cmd = runner.command('train.py', run, '--work-dir', '<tmp>')
            print(' '.join(cmd))
        return
    failures = runner.run()
    if failures:
        raise SystemExit(f'{failures} run(s) failed; rerun to retry them')


if __name__ == '__main__':
    main()
