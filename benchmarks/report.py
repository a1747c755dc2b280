"""The paired report of a study's results (from benchmarks/study.py).

Writes ``<name>.md`` (tables), ``<name>.png`` (paired differences) and, if
the runs recorded scores, ``<name>_reliability.png`` beside the JSON::

    python benchmarks/report.py benchmarks/results/<name>.json
"""
import argparse
import json
import statistics
from typing import Dict, List, Optional

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

# Metric: (title, decimals, what counts as better).
METRICS = {
    'top1': ('top-1 (%)', 2, 'higher'),
    'nll': ('NLL (nats)', 4, 'lower'),
    'ece': ('ECE (%)', 2, 'lower'),
    'confidence_gap': ('confidence - accuracy (points)', 2, 'nearer 0'),
    # Temperature scaling (a study's ``calibrate``): the fitted T and the
    # test metrics of the folded model.
    'temperature': ('temperature T', 3, None),
    'top1_ts': ('top-1 after T (%)', 2, 'higher'),
    'nll_ts': ('NLL after T (nats)', 4, 'lower'),
    'ece_ts': ('ECE after T (%)', 2, 'lower'),
    'confidence_gap_ts':
    ('confidence - accuracy after T (points)', 2, 'nearer 0'),
}
# Scores recorded per run: before and, with ``calibrate``, after scaling.
RELIABILITY = (('reliability', ''), ('reliability_ts', ', after T'))


def mean_std(values: List[float], decimals: int, signed: bool = False) -> str:
    """``'m +- s'`` with the sample standard deviation (one value: m)."""
    sign = '+' if signed else ''
    text = f'{statistics.mean(values):{sign}.{decimals}f}'
    if len(values) > 1:
        text += f' +- {statistics.stdev(values):.{decimals}f}'
    return text


def better(diff: float, mine: float, base: float, rule: str) -> bool:
    """Whether the first arm is better by the metric's rule."""
    nearer_0 = abs(mine) < abs(base)
    return dict(higher=diff > 0, lower=diff < 0).get(rule, nearer_0)


def show(group: object) -> str:
    """A condition as printed (integers with thousands separators)."""
    return f'{group:,}' if isinstance(group, int) else str(group)


def row(cells: List[str]) -> str:
    """A markdown table row."""
    return '| ' + ' | '.join(cells) + ' |'


def head(cells: List[str]) -> List[str]:
    """A markdown table head: the first column left-aligned, others right."""
    return [row(cells), '|---|' + '---:|' * (len(cells) - 1)]


def pooled_bins(runs: List[dict], field: str = 'reliability') -> List[tuple]:
    """(confidence, accuracy) of each non-empty bin, the runs pooled."""
    sums = [[sum(v) for v in zip(*[r[field][key] for r in runs])]
            for key in ('count', 'confidence', 'correct')]
    return [(c / n, a / n) for n, c, a in zip(*sums) if n]


def whisker(ax: plt.Axes, x: float, values: List[float], color: str,
            label: Optional[str]) -> None:
    """Mean +- std of ``values`` at ``x``, and each value."""
    std = statistics.stdev(values) if len(values) > 1 else 0
    mean = statistics.mean(values)
    ax.errorbar(x, mean, std, fmt='o', color=color, capsize=3, label=label)
    ax.scatter([x] * len(values), values, s=9, color=color, alpha=0.4)


def save(fig: plt.Figure, path: str) -> None:
    """Lay the figure out, write it at 110 dpi and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class Report:
    """Tables and plots of a study's results JSON."""

    def __init__(self, results: dict) -> None:
        self.study = results['declaration']
        self.runs = results['runs']
        self.arms = list(self.study['arms'])
        groups = {r['group'] for r in self.runs}
        self.groups = sorted(groups, key=lambda g: (g is None, g))
        self.metrics = [m for m in METRICS if all(m in r for r in self.runs)]
        self.label = self.study.get('group_label', 'condition')

    def condition(self, group: object) -> str:
        """E.g. ``'training images N = 1,024'``."""
        return f'{self.label} = {show(group)}'

    def cell(self, arm: str, group: object) -> Dict[int, dict]:
        """Seed -> run of one arm in one condition."""
        runs = [r for r in self.runs if (r['arm'], r['group']) == (arm, group)]
        return {r['seed']: r for r in runs}

    def paired(self, arm: str, base: str, group: object,
               metric: str) -> List[tuple]:
        """(difference, arm's value, baseline's) per common seed."""
        mine, theirs = self.cell(arm, group), self.cell(base, group)
        seeds = sorted(set(mine) & set(theirs))
        values = [(mine[s][metric], theirs[s][metric]) for s in seeds]
        return [(m - b, m, b) for m, b in values]

    def markdown(self) -> str:
        """The tables, one section per condition."""
        lines = [f'# {self.study["name"]}', '', self.study['question'], '']
        for group in self.groups:
            if group is not None:
                lines += [f'## {self.condition(group)}', '']
            lines += self.arm_table(group) + [''] + self.diff_table(group)
            lines += [''] + self.seed_table(group) + ['']
        lines += [
            'Mean +- sample standard deviation over seeds; evaluated once, '
            'after the final epoch. Differences are paired by seed (first '
            'arm minus second); "better in" counts the seeds where the '
            'first arm is better (higher top-1; lower NLL and ECE; a '
            'confidence gap nearer 0).', ''
        ]
        return '\n'.join(lines)

    def arm_table(self, group: object) -> List[str]:
        lines = head(['arm', 'seeds', 'epochs', 'iterations', 'images seen'] +
                     [METRICS[m][0] for m in self.metrics])
        for arm in self.arms:
            runs = list(self.cell(arm, group).values())
            if not runs:
                continue
            first = runs[0]
            cells = [arm, str(len(runs)), str(first['epochs'])]
            cells += [f'{first[k]:,}' for k in ('iterations', 'images_seen')]
            for m in self.metrics:
                cells.append(mean_std([r[m] for r in runs], METRICS[m][1]))
            lines.append(row(cells))
        return lines

    def diff_table(self, group: object) -> List[str]:
        lines = head(['paired difference'] +
                     [METRICS[m][0] for m in self.metrics])
        for arm, base in self.study['compare']:
            cells = [f'{arm} - {base}']
            for metric in self.metrics:
                _, decimals, rule = METRICS[metric]
                pairs = self.paired(arm, base, group, metric)
                wins = sum(better(d, m, b, rule) for d, m, b in pairs)
                diffs = [d for d, _, _ in pairs]
                wins = f' (better in {wins} of {len(pairs)})' if rule else ''
                cells.append((mean_std(diffs, decimals, signed=True) +
                              wins) if pairs else '')
            lines.append(row(cells))
        return lines

    def seed_table(self, group: object) -> List[str]:
        by_arm = {a: self.cell(a, group) for a in self.arms}
        arms = [a for a in self.arms if by_arm[a]]
        lines = head(['top-1 (%) by seed'] + arms)
        for seed in sorted({s for a in arms for s in by_arm[a]}):
            runs = [by_arm[a].get(seed) for a in arms]
            top1 = [f'{r["top1"]:.2f}' if r else '' for r in runs]
            lines.append(row([str(seed)] + top1))
        return lines

    def plot(self, path: str) -> None:
        """Paired differences per condition: mean +- std and each seed."""
        metrics = [
            m for m in self.metrics
            if not m.startswith('confidence_gap') and m != 'temperature'
        ]
        n = len(metrics)
        fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8), squeeze=False)
        pairs = self.study['compare']
        for ax, metric in zip(axes[0], metrics):
            for k, (arm, base) in enumerate(pairs):
                offset = (k - (len(pairs) - 1) / 2) * 0.12
                for x, g in enumerate(self.groups):
                    diffs = [p[0] for p in self.paired(arm, base, g, metric)]
                    label = f'{arm} - {base}' if x == 0 else None
                    if diffs:
                        whisker(ax, x + offset, diffs, f'C{k}', label)
            ax.axhline(0.0, color='0.5', lw=0.8)
            ax.set_xticks(range(len(self.groups)))
            ax.set_xticklabels(
                ['' if g is None else show(g) for g in self.groups])
            if self.groups != [None]:
                ax.set_xlabel(self.label)
            ax.set_title(
                f'paired difference, {METRICS[metric][0]}', fontsize=10)
        if axes[0, 0].get_legend_handles_labels()[0]:  # pairs with results
            axes[0, 0].legend(fontsize=7)
        fig.suptitle(self.study['name'], fontsize=10)
        save(fig, path)

    def plot_reliability(self, path: str) -> bool:
        """Accuracy against confidence per bin (a second row after
        temperature scaling, where recorded); False if no scores."""
        fields = [(f, t) for f, t in RELIABILITY
                  if all(f in r for r in self.runs)]
        if not fields:
            return False
        n, rows = len(self.groups), len(fields)
        fig, axes = plt.subplots(
            rows, n, figsize=(3.8 * n, 3.9 * rows), squeeze=False)
        for (field, tag), ax_row in zip(fields, axes):
            for ax, group in zip(ax_row, self.groups):
                ax.plot([0, 1], [0, 1], '--', color='0.6', lw=0.8)
                for k, arm in enumerate(self.arms):
                    runs = list(self.cell(arm, group).values())
                    if runs:
                        x, y = zip(*pooled_bins(runs, field))
                        ax.plot(x, y, 'o-', ms=3, color=f'C{k}', label=arm)
                ax.set(xlim=(0, 1), ylim=(0, 1), xlabel='confidence')
                ax.set(ylabel='accuracy')
                title = '' if group is None else self.condition(group)
                ax.set_title(title + tag, fontsize=10)
        axes[0, 0].legend(fontsize=7)
        save(fig, path)
        return True


def write_report(results_path: str) -> Dict[str, str]:
    """Write the markdown and the plots beside ``results_path``.

    Returns:
        dict[str, str]: The paths written (``markdown``, ``plot`` and, if
        the runs recorded scores, ``reliability``).
    """
    with open(results_path, encoding='utf-8') as f:
        report = Report(json.load(f))
    stem = results_path[:-len('.json')]
    paths = dict(markdown=stem + '.md', plot=stem + '.png')
    with open(paths['markdown'], 'w', encoding='utf-8') as f:
        f.write(report.markdown())
    report.plot(paths['plot'])
    if report.plot_reliability(stem + '_reliability.png'):
        paths['reliability'] = stem + '_reliability.png'
    return paths


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('results', help='a study\'s results JSON')
    paths = write_report(parser.parse_args(argv).results)
    with open(paths['markdown'], encoding='utf-8') as f:
        print(f.read())
    print('wrote ' + ', '.join(paths.values()))


if __name__ == '__main__':
    main()
