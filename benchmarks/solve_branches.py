"""Is each way of applying the Cholesky factor worth its branch?

``knowledge_ensemble`` applies the factor ``L`` of ``D - w E`` with
``torch.cholesky_solve`` on CUDA (the simplest way) and on the CPU in one of
two other ways, by batch size (``mmbake/models/utils/knowledge_ensemble.py``,
``_solve``). This times the whole ``knowledge_ensemble`` call on the CPU with
each way forced, candidates in a shuffled order each round, and prints the
medians and their ratios to ``cholesky_solve``; a branch stays where it is
faster beyond the spread between rounds.

Example::

    python benchmarks/solve_branches.py --sizes 64 128 256 512 1024 2048

Timings are printed, never asserted; docs/benchmarks.md records them.
"""
import argparse
import contextlib
import importlib
import platform
import random
import statistics
import time

import torch

from mmbake.models import knowledge_ensemble

# The module, not the function of the same name that the package exports.
module = importlib.import_module('mmbake.models.utils.knowledge_ensemble')

ORIGINAL_SOLVE = module._solve


def cholesky_solve(chol, probs, scale):
    """The simplest way, which CUDA uses."""
    return torch.cholesky_solve(probs * scale.unsqueeze(1), chol)


@contextlib.contextmanager
def forced(way: str):
    """Run ``knowledge_ensemble`` with one way of applying the factor."""
    threshold = module._CPU_INVERSE_BELOW
    if way == 'cholesky_solve':
        module._solve = cholesky_solve
    else:  # the CPU branches, chosen through the size threshold
        module._CPU_INVERSE_BELOW = 1 << 30 if way == 'inverse' else 0
    try:
        yield
    finally:
        module._solve, module._CPU_INVERSE_BELOW = ORIGINAL_SOLVE, threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+',
                        default=[64, 128, 256, 512, 1024, 2048, 4096])
    parser.add_argument('--rounds', type=int, default=21,
                        help='rounds up to B=512; a third of them above')
    args = parser.parse_args()
    print(f'torch {torch.__version__}, {platform.machine()}, '
          f'{torch.get_num_threads()} threads; D=2048, K=1000, '
          f'chosen: inverse below B={module._CPU_INVERSE_BELOW}, '
          'right-sided solves from there on')
    ways = ['cholesky_solve', 'inverse', 'right_solves']
    print(f'{"B":>6} ' + ' '.join(f'{w + " (ms)":>20}' for w in ways) +
          f' {"inverse/chol":>13} {"right/chol":>11} {"spread":>7}')
    for num in args.sizes:
        gen = torch.Generator().manual_seed(num)
        feats = torch.randn(num, 2048, generator=gen)
        logits = 3 * torch.randn(num, 1000, generator=gen)
        rounds = args.rounds if num <= 512 else max(3, args.rounds // 3)
        times = {way: [] for way in ways}
        order = random.Random(0)
        results = {}
        for _ in range(rounds + 1):  # the first round warms up
            order.shuffle(ways)
            for way in ways:
                with forced(way):
                    start = time.perf_counter()
                    results[way] = knowledge_ensemble(feats, logits)
                    times[way].append(time.perf_counter() - start)
        for way in ways:
            torch.testing.assert_close(results[way],
                                       results['cholesky_solve'])
        med = {w: statistics.median(t[1:]) for w, t in times.items()}
        # Spread: interquartile range of the baseline over its median.
        quart = statistics.quantiles(times['cholesky_solve'][1:], n=4)
        spread = (quart[2] - quart[0]) / med['cholesky_solve']
        print(f'{num:>6} ' + ' '.join(
            f'{med[w] * 1e3:>20.2f}'
            for w in ('cholesky_solve', 'inverse', 'right_solves')) +
            f' {med["inverse"] / med["cholesky_solve"]:>13.2f}'
            f' {med["right_solves"] / med["cholesky_solve"]:>11.2f}'
            f' {spread:>7.2f}', flush=True)


if __name__ == '__main__':
    main()
