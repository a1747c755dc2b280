"""Tables and plots for the accuracy study (benchmarks/accuracy.py).

Reads the study's result file::

    {"dataset": str, "config": {...},
     "runs": [{"method": "vanilla" | "label_smoothing" | "bake",
               "seed": int, "top1": float, "images_seen": int,
               "train_seconds": float, ...}, ...]}

and writes a markdown table (per-seed top-1, mean +- std per method, paired
differences against BAKE with their mean and the number of seeds BAKE wins)
and a PNG plot. Runs standalone::

    python benchmarks/report.py benchmarks/results/accuracy_fashion_mnist.json

which writes ``accuracy_fashion_mnist.md`` and ``accuracy_fashion_mnist.png``
next to the JSON (``--markdown`` / ``--plot`` choose other paths).

Training curves (losses and validation top-1 per epoch) from mmengine's
``vis_data/scalars.json`` logs, one curve set per ``label=path``::

    python benchmarks/report.py --curves BAKE=bake.json vanilla=plain.json \
        --iters-per-epoch 156 --plot curves.png
"""
import argparse
import json
import math
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

METHODS = ('vanilla', 'label_smoothing', 'bake')
LABELS = {
    'vanilla': 'vanilla CE',
    'label_smoothing': 'label smoothing',
    'bake': 'BAKE',
}
# (treatment, baseline) pairs whose per-seed differences are reported.
COMPARISONS = (('bake', 'vanilla'), ('bake', 'label_smoothing'),
               ('label_smoothing', 'vanilla'))
RUN_KEYS = ('method', 'seed', 'top1', 'images_seen', 'train_seconds')


def load_results(path: str) -> dict:
    """Load and check a result file.

    Args:
        path (str): The JSON file written by ``benchmarks/accuracy.py``.

    Returns:
        dict: The parsed results.

    Raises:
        ValueError: If a run lacks a key, names an unknown method, or a
            (method, seed) pair appears twice.
    """
    with open(path, encoding='utf-8') as f:
        results = json.load(f)
    check_results(results)
    return results


def check_results(results: dict,
                  methods: Sequence[str] = METHODS,
                  key: str = 'method',
                  run_keys: Sequence[str] = RUN_KEYS) -> None:
    """Raise a ValueError describing the first problem of a result dict.

    Args:
        results (dict): Parsed results (see the module docstring).
        methods (Sequence[str]): The allowed values of ``run[key]``.
            Defaults to this study's methods.
        key (str): The run field naming the method. Defaults to
            ``'method'``.
        run_keys (Sequence[str]): The fields every run must have.
            Defaults to this study's.
    """
    if not isinstance(results, dict) or not isinstance(
            results.get('runs'), list):
        raise ValueError('results must be a dict with a "runs" list, but got '
                         f'{type(results).__name__}')
    seen = set()
    for run in results['runs']:
        missing = [name for name in run_keys if name not in run]
        if missing:
            raise ValueError(f'run {run!r} lacks the keys {missing}')
        if run[key] not in methods:
            raise ValueError(f'run {key} must be one of {tuple(methods)}, '
                             f'but got {run[key]!r}')
        pair = (run[key], int(run['seed']))
        if pair in seen:
            raise ValueError(f'({key}, seed) = {pair} appears twice')
        seen.add(pair)


def _mean_std(values: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for one value)."""
    num = len(values)
    mean = sum(values) / num
    var = sum((v - mean)**2 for v in values) / (num - 1) if num > 1 else 0.0
    return {'mean': mean, 'std': math.sqrt(var)}


def summarize(results: dict,
              methods: Sequence[str] = METHODS,
              comparisons: Sequence[Tuple[str, str]] = COMPARISONS,
              key: str = 'method',
              metric: str = 'top1',
              run_keys: Sequence[str] = RUN_KEYS) -> dict:
    """Per-method statistics and paired per-seed differences of a metric.

    Args:
        results (dict): Parsed results (see the module docstring).
        methods (Sequence[str]): The methods, in report order. Defaults to
            this study's.
        comparisons (Sequence[tuple[str, str]]): (treatment, baseline)
            pairs to difference. Defaults to this study's.
        key (str): The run field naming the method. Defaults to
            ``'method'``.
        metric (str): The run field summarised. Defaults to ``'top1'``.
        run_keys (Sequence[str]): The fields every run must have.

    Returns:
        dict: ``methods``: for each method present, ``seeds``, the metric's
        values (under the metric's name, per seed, in seed order), their
        ``mean`` and ``std``, ``images_seen`` (set of values) and
        ``train_seconds`` (mean); ``paired``: for each comparison ``'a-b'``
        with both methods present, the common ``seeds``, per-seed ``diffs``
        (a minus b), their ``mean`` and ``std``, and ``wins`` / ``ties`` /
        ``losses`` of a (a win is a positive difference).
    """
    check_results(results, methods, key, run_keys)
    by_method: Dict[str, Dict[int, dict]] = {}
    for run in results['runs']:
        by_method.setdefault(run[key], {})[int(run['seed'])] = run

    stats = {}
    for method in methods:
        runs = by_method.get(method)
        if not runs:
            continue
        seeds = sorted(runs)
        values = [float(runs[s][metric]) for s in seeds]
        stats[method] = {
            'seeds': seeds,
            metric: values,
            'images_seen': sorted({int(runs[s]['images_seen'])
                                   for s in seeds}),
            'train_seconds': sum(float(runs[s]['train_seconds'])
                                 for s in seeds) / len(seeds),
            **_mean_std(values)
        }

    paired = {}
    for first, second in comparisons:
        if first not in by_method or second not in by_method:
            continue
        seeds = sorted(set(by_method[first]) & set(by_method[second]))
        if not seeds:
            continue
        diffs = [
            float(by_method[first][s][metric]) -
            float(by_method[second][s][metric]) for s in seeds
        ]
        paired[f'{first}-{second}'] = dict(
            seeds=seeds,
            diffs=diffs,
            wins=sum(d > 0 for d in diffs),
            ties=sum(d == 0 for d in diffs),
            losses=sum(d < 0 for d in diffs),
            **_mean_std(diffs))
    return {'methods': stats, 'paired': paired}


def _fmt(value: Optional[float], signed: bool = False) -> str:
    """Format a top-1 value or difference in points, '-' when missing."""
    if value is None:
        return '-'
    return f'{value:+.2f}' if signed else f'{value:.2f}'


def to_markdown(results: dict, summary: Optional[dict] = None) -> str:
    """Render the study as a markdown table plus a short verdict.

    Args:
        results (dict): Parsed results (see the module docstring).
        summary (dict, optional): The output of :func:`summarize`; computed
            when None.

    Returns:
        str: Markdown text (a per-seed table with mean +- std rows, the
        paired comparisons, and the images seen per method).
    """
    summary = summarize(results) if summary is None else summary
    methods = summary['methods']
    paired = summary['paired']
    shown = [m for m in METHODS if m in methods]
    comparisons = [c for c in ('bake-vanilla', 'bake-label_smoothing')
                   if c in paired]
    top1 = {m: dict(zip(methods[m]['seeds'], methods[m]['top1']))
            for m in shown}
    seeds = sorted({s for m in shown for s in methods[m]['seeds']})

    header = ['seed'] + [LABELS[m] for m in shown] + [
        _comparison_label(c) for c in comparisons
    ]
    lines = [
        '| ' + ' | '.join(header) + ' |',
        '|' + '|'.join(['---'] * len(header)) + '|',
    ]
    for seed in seeds:
        row = [str(seed)] + [_fmt(top1[m].get(seed)) for m in shown]
        for comp in comparisons:
            diffs = dict(zip(paired[comp]['seeds'], paired[comp]['diffs']))
            row.append(_fmt(diffs.get(seed), signed=True))
        lines.append('| ' + ' | '.join(row) + ' |')
    row = ['mean +- std'] + [
        f'{methods[m]["mean"]:.2f} +- {methods[m]["std"]:.2f}' for m in shown
    ] + [
        f'{paired[c]["mean"]:+.2f} +- {paired[c]["std"]:.2f}'
        for c in comparisons
    ]
    lines.append('| ' + ' | '.join(row) + ' |')
    if comparisons:
        row = ['BAKE wins'] + [''] * len(shown) + [
            f'{paired[c]["wins"]} of {len(paired[c]["seeds"])}'
            for c in comparisons
        ]
        lines.append('| ' + ' | '.join(row) + ' |')

    lines.append('')
    lines.append('Top-1 (%) on the official 10,000 test images after the '
                 'final epoch; std is the sample standard deviation over '
                 'seeds; differences are paired by seed, in points.')
    lines.append('')
    for method in shown:
        info = methods[method]
        seen = ', '.join(f'{n:,}' for n in info['images_seen'])
        lines.append(f'- {LABELS[method]}: {len(info["seeds"])} seeds, '
                     f'{seen} training images seen per run, '
                     f'{info["train_seconds"]:.0f} s per run on average.')
    for comp, info in paired.items():
        lines.append(
            f'- {_comparison_label(comp)}: mean {info["mean"]:+.2f} points '
            f'(std {info["std"]:.2f}); {info["wins"]} wins, {info["ties"]} '
            f'ties, {info["losses"]} losses over {len(info["seeds"])} '
            'paired seeds.')
    return '\n'.join(lines) + '\n'


def _comparison_label(comparison: str,
                      labels: Optional[Dict[str, str]] = None) -> str:
    """'bake-vanilla' -> 'BAKE - vanilla CE' (``labels``: ours if None)."""
    labels = LABELS if labels is None else labels
    first, second = comparison.split('-')
    return f'{labels[first]} - {labels[second]}'


def draw_per_seed(ax,
                  stats: dict,
                  labels: Dict[str, str],
                  metric: str = 'top1',
                  ylabel: str = 'top-1 (%), final epoch') -> None:
    """Each seed's value per method, seeds joined, with the mean +- std.

    Args:
        ax (matplotlib.axes.Axes): Where to draw.
        stats (dict): ``summarize(...)['methods']``, in the order to show.
        labels (dict[str, str]): Method -> axis label.
        metric (str): The summarised field. Defaults to ``'top1'``.
        ylabel (str): The y-axis label.
    """
    shown = list(stats)
    by_seed: Dict[int, List[Optional[float]]] = {}
    for i, method in enumerate(shown):
        for seed, value in zip(stats[method]['seeds'],
                               stats[method][metric]):
            by_seed.setdefault(seed, [None] * len(shown))[i] = value
    for seed, values in sorted(by_seed.items()):
        xs = [i for i, v in enumerate(values) if v is not None]
        ax.plot(xs, [values[i] for i in xs], '-o', color='0.7', lw=0.8,
                ms=4, zorder=1)
    for i, method in enumerate(shown):
        info = stats[method]
        ax.errorbar(i + 0.15, info['mean'], yerr=info['std'], fmt='s',
                    color='C3', capsize=4, zorder=2,
                    label='mean +- std' if i == 0 else None)
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels([labels[m] for m in shown])
    ax.set_ylabel(ylabel)
    ax.legend(loc='best')
    ax.grid(axis='y', alpha=0.3)


def draw_paired(ax,
                paired: dict,
                comparisons: Sequence[str],
                labels: Dict[str, str],
                ylabel: str = 'paired difference (points)',
                better: str = 'higher',
                digits: int = 2) -> None:
    """Per-seed differences of each comparison with their mean.

    Args:
        ax (matplotlib.axes.Axes): Where to draw.
        paired (dict): ``summarize(...)['paired']``.
        comparisons (Sequence[str]): Keys of ``paired`` (``'a-b'``), in
            the order to show.
        labels (dict[str, str]): Method -> label.
        ylabel (str): The y-axis label.
        better (str): ``'higher'`` or ``'lower'``: which sign counts as a
            win of ``a`` in the annotation. Defaults to ``'higher'``.
        digits (int): Decimals of the annotated mean. Defaults to 2.
    """
    if better not in ('higher', 'lower'):
        raise ValueError(f"better must be 'higher' or 'lower', but got "
                         f'{better!r}')
    for j, comp in enumerate(comparisons):
        info = paired[comp]
        wins = info['wins'] if better == 'higher' else info['losses']
        ax.scatter([j] * len(info['diffs']), info['diffs'], color='C0',
                   zorder=2)
        ax.hlines(info['mean'], j - 0.25, j + 0.25, color='C3', zorder=3)
        ax.annotate(
            f'{info["mean"]:+.{digits}f}\n({wins}/{len(info["seeds"])} wins)',
            (j + 0.28, info['mean']), va='center', fontsize=8)
    ax.axhline(0.0, color='k', lw=0.8)
    ax.set_xticks(range(len(comparisons)))
    # One line per arm: long labels side by side would overlap.
    ax.set_xticklabels([
        _comparison_label(c, labels).replace(' - ', '\n- ')
        for c in comparisons
    ], fontsize=8)
    ax.set_xlim(-0.5, len(comparisons) - 0.2)
    ax.set_ylabel(ylabel)
    ax.grid(axis='y', alpha=0.3)


def plot(results: dict, path: str, summary: Optional[dict] = None,
         title: Optional[str] = None) -> str:
    """Draw per-seed top-1 by method and the paired differences as a PNG.

    Left panel: each seed's top-1 per method (seeds joined across methods,
    so pairing is visible) with the mean +- std. Right panel: per-seed
    differences BAKE - vanilla and BAKE - label smoothing with their means.

    Args:
        results (dict): Parsed results (see the module docstring).
        path (str): Where to write the PNG.
        summary (dict, optional): The output of :func:`summarize`.
        title (str, optional): Figure title; the dataset name when None.

    Returns:
        str: ``path``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    summary = summarize(results) if summary is None else summary
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10, 4), gridspec_kw=dict(width_ratios=[3, 2]))
    draw_per_seed(left, summary['methods'], LABELS)
    left.set_title('per seed (grey lines join a seed)')
    comparisons = [c for c in ('bake-vanilla', 'bake-label_smoothing')
                   if c in summary['paired']]
    draw_paired(right, summary['paired'], comparisons, LABELS)
    right.set_title('per-seed differences (red: mean)')

    if title is None:
        title = results.get('dataset', 'accuracy study')
        config = results.get('config', {})
        if 'train_images' in config and 'epochs' in config:
            title += (f': first {config["train_images"]:,} training images, '
                      f'{config["epochs"]} epochs, top-1 on the '
                      f'{config.get("test_images", 10000):,} test images')
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(results_path: str,
                 markdown_path: Optional[str] = None,
                 plot_path: Optional[str] = None) -> Dict[str, str]:
    """Write the markdown table and the PNG for a result file.

    Args:
        results_path (str): The JSON result file.
        markdown_path (str, optional): Output markdown; the JSON's path with
            ``.md`` when None.
        plot_path (str, optional): Output PNG; the JSON's path with ``.png``
            when None.

    Returns:
        dict[str, str]: The paths written, under ``markdown`` and ``plot``.
    """
    results = load_results(results_path)
    stem = osp.splitext(results_path)[0]
    markdown_path = markdown_path or stem + '.md'
    plot_path = plot_path or stem + '.png'
    summary = summarize(results)
    with open(markdown_path, 'w', encoding='utf-8') as f:
        f.write(to_markdown(results, summary))
    plot(results, plot_path, summary)
    return {'markdown': markdown_path, 'plot': plot_path}


def read_scalars(path: str) -> Dict[str, List[dict]]:
    """Split an mmengine ``scalars.json`` log into train and val records.

    Args:
        path (str): The log: one JSON record per line; training records
            carry ``iter`` (global, 1-based), validation records the
            metric and ``step`` (the epoch).

    Returns:
        dict[str, list[dict]]: ``train`` and ``val`` records, in order.
    """
    train, val = [], []
    with open(path, encoding='utf-8') as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            if 'iter' in record:
                train.append(record)
            elif any(key.startswith('accuracy/') for key in record):
                val.append(record)
    return {'train': train, 'val': val}


def plot_curves(logs: Dict[str, str],
                path: str,
                iters_per_epoch: int,
                title: Optional[str] = None) -> str:
    """Draw training losses and validation top-1 per epoch as a PNG.

    Left panel: every loss key of each log (``loss_ce`` and ``loss_bake``
    for BAKE; ``loss`` for a plain head, where it is the only term); right
    panel: validation ``accuracy/top1`` by epoch.

    Args:
        logs (dict[str, str]): Curve label -> ``scalars.json`` path.
        path (str): Where to write the PNG.
        iters_per_epoch (int): Iterations per epoch (the x axis of the
            training records is ``iter / iters_per_epoch``).
        title (str, optional): Figure title.

    Returns:
        str: ``path``.
    """
    if not isinstance(iters_per_epoch, int) or iters_per_epoch < 1:
        raise ValueError('iters_per_epoch must be an int >= 1, but got '
                         f'{iters_per_epoch!r}.')
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    styles = ['-', '--', ':', '-.']
    for i, (label, log_path) in enumerate(logs.items()):
        records = read_scalars(log_path)
        train = records['train']
        keys = [k for k in ('loss_ce', 'loss_bake') if train and k in train[0]]
        if not keys and train and 'loss' in train[0]:
            keys = ['loss']
        xs = [r['iter'] / iters_per_epoch for r in train]
        for j, key in enumerate(keys):
            left.plot(xs, [r[key] for r in train], styles[j % len(styles)],
                      color=f'C{i}', lw=1, label=f'{label}: {key}')
        val = [r for r in records['val'] if 'accuracy/top1' in r]
        if val:
            right.plot([r['step'] for r in val],
                       [r['accuracy/top1'] for r in val], '-o', ms=3,
                       color=f'C{i}', label=label)
    left.set_xlabel('epoch')
    left.set_ylabel('training loss')
    left.set_yscale('log')
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.set_xlabel('epoch')
    right.set_ylabel('validation top-1 (%)')
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Optional[List[str]] = None) -> None:
    """Command line: write the report of a result file, or curves."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        'results', nargs='?', help='the JSON written by accuracy.py')
    parser.add_argument('--markdown', help='output markdown path')
    parser.add_argument('--plot', help='output PNG path')
    parser.add_argument(
        '--curves',
        nargs='+',
        metavar='LABEL=SCALARS_JSON',
        help='plot training curves from these logs instead (needs --plot '
        'and --iters-per-epoch)')
    parser.add_argument('--iters-per-epoch', type=int)
    parser.add_argument('--title')
    args = parser.parse_args(argv)
    if args.curves:
        if not args.plot or not args.iters_per_epoch:
            parser.error('--curves needs --plot and --iters-per-epoch')
        logs = {}
        for item in args.curves:
            label, sep, log_path = item.partition('=')
            if not sep or not osp.isfile(log_path):
                parser.error(f'--curves takes LABEL=EXISTING_PATH, got '
                             f'{item!r}')
            logs[label] = log_path
        plot_curves(logs, args.plot, args.iters_per_epoch, args.title)
        print(f'Wrote {args.plot}')
        return
    if args.results is None:
        parser.error('give a results JSON, or --curves')
    paths = write_report(args.results, args.markdown, args.plot)
    with open(paths['markdown'], encoding='utf-8') as f:
        print(f.read())
    print(f'Wrote {paths["markdown"]} and {paths["plot"]}')


if __name__ == '__main__':
    main()
