"""Tables and plot of the equal-compute study (benchmarks/equal_compute.py).

Reads the study's result file (``runs``: arm, seed, top1, nll, ece,
epochs, iterations, images_seen, train_seconds) and writes:

- a markdown report: per arm, mean +- std of top-1, NLL and ECE with the
  epochs, iterations, images seen and wall time of a run; the paired
  per-seed differences of each comparison with their mean +- std and the
  seeds BAKE is better in; and the per-seed values;
- a PNG: one row per metric, per-seed values by arm (seeds joined) and the
  paired differences (drawn by ``benchmarks/report.py``'s helpers).

Standalone::

    python benchmarks/equal_compute_report.py \
        benchmarks/results/equal_compute_fashion_mnist.json

writes ``equal_compute_fashion_mnist.md`` and ``.png`` next to the JSON.
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
# benchmarks/ is no package: its modules import each other from here.
import report  # noqa: E402
from equal_compute_arms import ARMS  # noqa: E402

LABELS = {
    'ce_same_epochs': 'CE, same epochs',
    'ce_same_iterations': 'CE, same iterations',
    'ls_same_iterations': 'LS, same iterations',
    'bake_authors': 'BAKE (authors)',
}
RUN_KEYS = ('arm', 'seed', 'top1', 'nll', 'ece', 'epochs', 'iterations',
            'images_seen', 'train_seconds')
# Metric -> (label, unit of a difference, decimals, which direction is
# better).
METRICS = {
    'top1': ('top-1 (%)', 'points', 2, 'higher'),
    'nll': ('NLL (nats)', 'nats', 4, 'lower'),
    'ece': ('ECE (%)', 'points', 2, 'lower'),
}
# (treatment, baseline): the paper's accounting, equal compute, BAKE
# against the other regulariser, and that regulariser against CE.
COMPARISONS = (('bake_authors', 'ce_same_epochs'),
               ('bake_authors', 'ce_same_iterations'),
               ('bake_authors', 'ls_same_iterations'),
               ('ls_same_iterations', 'ce_same_iterations'))


def check_results(results: dict) -> None:
    """Raise a ValueError describing the first problem of a result dict."""
    report.check_results(results, ARMS, 'arm', RUN_KEYS)


def load_results(path: str) -> dict:
    """Load and check a result file.

    Args:
        path (str): The JSON file written by ``equal_compute.py``.

    Returns:
        dict: The parsed results.
    """
    with open(path, encoding='utf-8') as f:
        results = json.load(f)
    check_results(results)
    return results


def summarize(results: dict) -> Dict[str, dict]:
    """Statistics and paired differences of every metric.

    Args:
        results (dict): Parsed results.

    Returns:
        dict: Metric -> ``report.summarize`` output (``methods``: per arm
        ``seeds``, values, ``mean``, ``std``, ``images_seen``,
        ``train_seconds``; ``paired``: per ``'a-b'`` comparison ``diffs``,
        ``mean``, ``std``, ``wins``, ``ties``, ``losses`` where a win is a
        positive difference), plus ``counts``: per arm the sets of
        ``epochs`` and ``iterations`` of its runs.
    """
    out = {
        metric: report.summarize(results, ARMS, COMPARISONS, 'arm', metric,
                                 RUN_KEYS)
        for metric in METRICS
    }
    counts = {}
    for run in results['runs']:
        entry = counts.setdefault(run['arm'], {'epochs': set(),
                                               'iterations': set()})
        entry['epochs'].add(int(run['epochs']))
        entry['iterations'].add(int(run['iterations']))
    out['counts'] = {
        arm: {key: sorted(values) for key, values in entry.items()}
        for arm, entry in counts.items()
    }
    return out


def better_count(info: dict, metric: str) -> int:
    """Seeds in which the treatment of a comparison is better.

    Args:
        info (dict): One ``paired`` entry of :func:`summarize`.
        metric (str): A key of ``METRICS``.

    Returns:
        int: Positive differences for top-1, negative ones for NLL and ECE.
    """
    return info['wins'] if METRICS[metric][3] == 'higher' else info['losses']


def _label(comparison: str) -> str:
    first, second = comparison.split('-')
    return f'{LABELS[first]} - {LABELS[second]}'


def _join(values: List[int]) -> str:
    return ', '.join(f'{v:,}' for v in values)


def to_markdown(results: dict, summary: Optional[dict] = None) -> str:
    """The report as markdown (three tables and the wins in words).

    Args:
        results (dict): Parsed results.
        summary (dict, optional): :func:`summarize` output.

    Returns:
        str: Markdown text.
    """
    summary = summarize(results) if summary is None else summary
    arms = [a for a in ARMS if a in summary['top1']['methods']]
    lines = ['| arm | epochs | iterations | images seen | top-1 (%) | '
             'NLL (nats) | ECE (%) | seconds per run |',
             '|---|---:|---:|---:|---:|---:|---:|---:|']
    for arm in arms:
        counts = summary['counts'][arm]
        cells = [LABELS[arm], _join(counts['epochs']),
                 _join(counts['iterations']),
                 _join(summary['top1']['methods'][arm]['images_seen'])]
        for metric, (_, _, digits, _) in METRICS.items():
            info = summary[metric]['methods'][arm]
            cells.append(f'{info["mean"]:.{digits}f} +- '
                         f'{info["std"]:.{digits}f}')
        cells.append(
            f'{summary["top1"]["methods"][arm]["train_seconds"]:.0f}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    seeds = sorted({s for a in arms
                    for s in summary['top1']['methods'][a]['seeds']})
    lines += [
        '', f'Mean +- sample standard deviation over {len(seeds)} seeds '
        f'({", ".join(map(str, seeds))}); evaluated once, after the final '
        'epoch, on the official test images; seconds: wall time of the '
        'training process (start-up, training and the final evaluation).',
        ''
    ]

    comparisons = [f'{a}-{b}' for a, b in COMPARISONS
                   if f'{a}-{b}' in summary['top1']['paired']]
    if comparisons:
        lines += ['| paired difference | top-1 (points) | NLL (nats) | '
                  'ECE (points) |', '|---|---:|---:|---:|']
        for comp in comparisons:
            cells = [_label(comp)]
            for metric, (_, _, digits, _) in METRICS.items():
                info = summary[metric]['paired'][comp]
                cells.append(
                    f'{info["mean"]:+.{digits}f} +- '
                    f'{info["std"]:.{digits}f} (better in '
                    f'{better_count(info, metric)} of {len(info["seeds"])})')
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines += [
            '', 'Per-seed differences (first minus second), mean +- sample '
            'standard deviation; "better in" counts the seeds where the '
            'first arm has the higher top-1 or the lower NLL / ECE.', ''
        ]

    header = ['seed'] + [LABELS[a] for a in arms] + [
        _label(c) for c in comparisons[:2]
    ]
    lines += ['| ' + ' | '.join(header) + ' |',
              '|' + '|'.join(['---'] * len(header)) + '|']
    top1 = {a: dict(zip(summary['top1']['methods'][a]['seeds'],
                        summary['top1']['methods'][a]['top1']))
            for a in arms}
    for seed in seeds:
        cells = [str(seed)] + [
            f'{top1[a][seed]:.2f}' if seed in top1[a] else '-' for a in arms
        ]
        for comp in comparisons[:2]:
            diffs = dict(zip(summary['top1']['paired'][comp]['seeds'],
                             summary['top1']['paired'][comp]['diffs']))
            cells.append(f'{diffs[seed]:+.2f}' if seed in diffs else '-')
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', 'Top-1 (%) per seed.']
    return '\n'.join(lines) + '\n'


def paired_lines(summary: dict) -> List[str]:
    """One line per comparison and metric: mean difference and wins."""
    lines = []
    for first, second in COMPARISONS:
        comp = f'{first}-{second}'
        for metric, (label, unit, digits, _) in METRICS.items():
            info = summary[metric]['paired'].get(comp)
            if info is None:
                continue
            lines.append(
                f'{_label(comp)}, {label}: {info["mean"]:+.{digits}f} '
                f'{unit} (std {info["std"]:.{digits}f}); better in '
                f'{better_count(info, metric)} of {len(info["seeds"])} seeds')
    return lines


def plot(results: dict, path: str, summary: Optional[dict] = None) -> str:
    """Per-seed values and paired differences of every metric, as a PNG.

    Args:
        results (dict): Parsed results.
        path (str): Where to write the PNG.
        summary (dict, optional): :func:`summarize` output.

    Returns:
        str: ``path``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    summary = summarize(results) if summary is None else summary
    fig, axes = plt.subplots(
        len(METRICS), 2, figsize=(13, 4 * len(METRICS)),
        gridspec_kw=dict(width_ratios=[3, 2]))
    for row, (metric, (label, unit, digits, better)) in zip(axes,
                                                          METRICS.items()):
        stats = summary[metric]
        report.draw_per_seed(row[0], stats['methods'], LABELS, metric, label)
        comparisons = [f'{a}-{b}' for a, b in COMPARISONS[:3]
                       if f'{a}-{b}' in stats['paired']]
        report.draw_paired(row[1], stats['paired'], comparisons, LABELS,
                           f'{label}: difference ({unit})', better, digits)
        row[0].set_title(f'{label} per seed (grey lines join a seed)')
        row[1].set_title(f'paired differences ({better} is better; red: '
                         'mean)')
    declared = results.get('config', {}).get('declared', {})
    title = results.get('dataset', 'equal-compute study')
    if declared:
        title += (f': first {declared["train_images"]:,} training images, '
                  f'E = {declared["epochs"]}, batch {declared["batch_size"]}'
                  '; official test images, final epoch')
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(results_path: str,
                 markdown_path: Optional[str] = None,
                 plot_path: Optional[str] = None) -> Dict[str, str]:
    """Write the markdown and the PNG of a result file; print the pairs.

    Args:
        results_path (str): The JSON result file.
        markdown_path (str, optional): Defaults to the JSON's path, ``.md``.
        plot_path (str, optional): Defaults to the JSON's path, ``.png``.

    Returns:
        dict[str, str]: The paths written, under ``markdown`` and ``plot``.
    """
    results = load_results(results_path)
    stem = osp.splitext(results_path)[0]
    paths = {
        'markdown': markdown_path or stem + '.md',
        'plot': plot_path or stem + '.png'
    }
    if not results['runs']:
        raise ValueError(f'{results_path} holds no runs yet')
    summary = summarize(results)
    with open(paths['markdown'], 'w', encoding='utf-8') as f:
        f.write(to_markdown(results, summary))
    plot(results, paths['plot'], summary)
    for line in paired_lines(summary):
        print(line)
    return paths


def main(argv: Optional[List[str]] = None) -> None:
    """Command line: the report of a result file."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('results', help='the JSON of equal_compute.py')
    parser.add_argument('--markdown', help='output markdown path')
    parser.add_argument('--plot', help='output PNG path')
    args = parser.parse_args(argv)
    paths = write_report(args.results, args.markdown, args.plot)
    with open(paths['markdown'], encoding='utf-8') as f:
        print(f.read())
    print(f'Wrote {paths["markdown"]} and {paths["plot"]}')


if __name__ == '__main__':
    main()
