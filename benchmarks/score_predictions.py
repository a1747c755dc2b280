"""Top-1, NLL, ECE and confidence gap of ``tools/test.py --out`` pickles.

    python benchmarks/score_predictions.py PREDS.pkl [PREDS.pkl ...]

prints one line per file (``benchmarks/study.py``'s ``scored``: 15 ECE
bins, the ``Calibration`` metric's definitions).
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from study import scored  # noqa: E402


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('predictions', nargs='+', help='tools/test.py --out')
    for path in parser.parse_args(argv).predictions:
        found = scored(path)
        print(f'{path}: {sum(found["bins"]["count"])} images, top-1 '
              f'{found["top1"]:.2f} %, NLL {found["nll"]:.4f}, ECE '
              f'{found["ece"]:.2f} %, confidence gap '
              f'{found["confidence_gap"]:+.2f} points')


if __name__ == '__main__':
    main()
