"""The paired report of a study's results (from benchmarks/study.py).

Writes, beside the results JSON, ``<name>.md`` (per condition: mean +- std
of every metric per arm, the declared paired differences with the seeds
each arm wins, top-1 per seed), ``<name>.png`` (the paired differences)
and, where the runs recorded scores, ``<name>_reliability.png`` (accuracy
against confidence per bin, one line per arm, seeds pooled)::

    python benchmarks/report.py \
        benchmarks/results/budget_map_fashion_mnist.json
"""
import argparse
import json
import statistics
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

# Metric: (title, decimals, what counts as better).
METRICS = {
    'top1': ('top-1 (%)', 2, 'higher'),
    'nll': ('NLL (nats)', 4, 'lower'),
    'ece': ('ECE (%)', 2, 'lower'),
    'confidence_gap': ('confidence - accuracy (points)', 2, 'nearer 0'),
}


def mean_std(values: Sequence[float],
             decimals: int,
             signed: bool = False) -> str:
    """``'m +- s'`` with the sample standard deviation (one value: m)."""
    sign = '+' if signed else ''
    text = f'{statistics.mean(values):{sign}.{decimals}f}'
    if len(values) > 1:
        text += f' +- {statistics.stdev(values):.{decimals}f}'
    return text


def better(diff: float, mine: float, base: float, rule: str) -> bool:
    """Whether the first arm is better by the metric's rule."""
    if rule == 'higher':
        return diff > 0
    if rule == 'lower':
        return diff < 0
    return abs(mine) < abs(base)


class Report:
    """Tables and plots of one results file.

    Args:
        results (dict): The results JSON of a study.
    """

    def __init__(self, results: dict) -> None:
        self.study = results['declaration']
        self.runs = results['runs']
        self.arms = list(self.study['arms'])
        self.groups = sorted({r['group']
                              for r in self.runs},
                             key=lambda g: (g is None, g))
        self.metrics = [m for m in METRICS if all(m in r for r in self.runs)]

    def cell(self, arm: str, group: object) -> Dict[int, dict]:
        """Seed -> run of one arm in one condition."""
        return {
            r['seed']: r
            for r in self.runs if r['arm'] == arm and r['group'] == group
        }

    def paired(self, arm: str, base: str, group: object,
               metric: str) -> List[tuple]:
        """(seed, difference, arm's value, baseline's) per common seed."""
        mine, theirs = self.cell(arm, group), self.cell(base, group)
        return [(s, mine[s][metric] - theirs[s][metric], mine[s][metric],
                 theirs[s][metric]) for s in sorted(set(mine) & set(theirs))]

    def group_title(self, group: object) -> str:
        label = self.study.get('group_label', 'condition')
        return f'{label} = {group:,}' if isinstance(group, int) else \
            f'{label} = {group}'

    def markdown(self) -> str:
        """The tables, one section per condition."""
        lines = [f'# {self.study["name"]}', '', self.study['question'], '']
        for group in self.groups:
            if group is not None:
                lines += [f'## {self.group_title(group)}', '']
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
        heads = ['arm', 'seeds', 'epochs', 'iterations', 'images seen'] + \
            [METRICS[m][0] for m in self.metrics]
        lines = [
            '| ' + ' | '.join(heads) + ' |',
            '|---|' + '---:|' * (len(heads) - 1)
        ]
        for arm in self.arms:
            runs = list(self.cell(arm, group).values())
            if not runs:
                continue
            row = [
                arm,
                str(len(runs)),
                str(runs[0]['epochs']), f'{runs[0]["iterations"]:,}',
                f'{runs[0]["images_seen"]:,}'
            ]
            row += [
                mean_std([r[m] for r in runs], METRICS[m][1])
                for m in self.metrics
            ]
            lines.append('| ' + ' | '.join(row) + ' |')
        return lines

    def diff_table(self, group: object) -> List[str]:
        heads = ['paired difference'] + [METRICS[m][0] for m in self.metrics]
        lines = [
            '| ' + ' | '.join(heads) + ' |',
            '|---|' + '---:|' * len(self.metrics)
        ]
        for arm, base in self.study['compare']:
            row = [f'{arm} - {base}']
            for metric in self.metrics:
                pairs = self.paired(arm, base, group, metric)
                if not pairs:
                    row.append('')
                    continue
                wins = sum(
                    better(d, m, b, METRICS[metric][2])
                    for _, d, m, b in pairs)
                row.append(
                    mean_std([d for _, d, _, _ in pairs],
                             METRICS[metric][1],
                             signed=True) +
                    f' (better in {wins} of {len(pairs)})')
            lines.append('| ' + ' | '.join(row) + ' |')
        return lines

    def seed_table(self, group: object) -> List[str]:
        arms = [a for a in self.arms if self.cell(a, group)]
        seeds = sorted({s for a in arms for s in self.cell(a, group)})
        lines = [
            '| top-1 (%) by seed | ' + ' | '.join(arms) + ' |',
            '|---|' + '---:|' * len(arms)
        ]
        for seed in seeds:
            lines.append(f'| {seed} | ' +
                         ' | '.join(f'{self.cell(a, group)[seed]["top1"]:.2f}'
                                    if seed in self.cell(a, group) else ''
                                    for a in arms) + ' |')
        return lines

    def plot(self, path: str) -> None:
        """Paired differences per condition: mean +- std and each seed."""
        metrics = [m for m in self.metrics if m != 'confidence_gap']
        fig, axes = plt.subplots(
            1, len(metrics), figsize=(4.6 * len(metrics), 3.8))
        axes = [axes] if len(metrics) == 1 else list(axes)
        pairs = self.study['compare']
        for ax, metric in zip(axes, metrics):
            for k, (arm, base) in enumerate(pairs):
                offset = (k - (len(pairs) - 1) / 2) * 0.12
                for x, group in enumerate(self.groups):
                    diffs = [
                        d
                        for _, d, _, _ in self.paired(arm, base, group, metric)
                    ]
                    if not diffs:
                        continue
                    std = statistics.stdev(diffs) if len(diffs) > 1 else 0
                    ax.errorbar(
                        x + offset,
                        statistics.mean(diffs),
                        std,
                        fmt='o',
                        color=f'C{k}',
                        capsize=3,
                        label=f'{arm} - {base}' if x == 0 else None)
                    ax.scatter(
                        [x + offset] * len(diffs),
                        diffs,
                        s=9,
                        color=f'C{k}',
                        alpha=0.4)
            ax.axhline(0.0, color='0.5', lw=0.8)
            ax.set_xticks(range(len(self.groups)))
            ax.set_xticklabels([
                '' if g is None else f'{g:,}' if isinstance(g, int) else str(g)
                for g in self.groups
            ])
            if self.groups != [None]:
                ax.set_xlabel(self.study.get('group_label', 'condition'))
            ax.set_title(
                f'paired difference, {METRICS[metric][0]}', fontsize=10)
        axes[0].legend(fontsize=7)
        fig.suptitle(self.study['name'], fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def plot_reliability(self, path: str) -> bool:
        """Accuracy against confidence per bin; False if no scores."""
        if not all('reliability' in r for r in self.runs):
            return False
        fig, axes = plt.subplots(
            1, len(self.groups), figsize=(3.8 * len(self.groups), 3.9))
        axes = [axes] if len(self.groups) == 1 else list(axes)
        for ax, group in zip(axes, self.groups):
            ax.plot([0, 1], [0, 1], '--', color='0.6', lw=0.8)
            for k, arm in enumerate(self.arms):
                runs = list(self.cell(arm, group).values())
                if not runs:
                    continue
                sums = {
                    key: [
                        sum(v)
                        for v in zip(*[r['reliability'][key] for r in runs])
                    ]
                    for key in ('count', 'confidence', 'correct')
                }
                points = [(c / n, a / n) for n, c, a in zip(
                    sums['count'], sums['confidence'], sums['correct']) if n]
                ax.plot(*zip(*points), 'o-', ms=3, color=f'C{k}', label=arm)
            ax.set(
                xlim=(0, 1),
                ylim=(0, 1),
                xlabel='confidence',
                ylabel='accuracy')
            ax.set_title(
                '' if group is None else self.group_title(group), fontsize=10)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
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
