"""How long ``import mmbake`` takes on top of ``import mmpretrain.models``.

Medians, over fresh interpreters, of the wall-clock and CPU seconds::

    python benchmarks/import_time.py [--repeats 7]
"""
import argparse
import statistics
import subprocess
import sys

PROBE = '''
import time, warnings
warnings.simplefilter('ignore')
w0, c0 = time.perf_counter(), time.process_time()
import mmpretrain.models
w1, c1 = time.perf_counter(), time.process_time()
import mmbake
w2, c2 = time.perf_counter(), time.process_time()
print(w1 - w0, c1 - c0, w2 - w1, c2 - c1)
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=7)
    args = parser.parse_args()
    rows, cmd = [], [sys.executable, '-c', PROBE]
    for _ in range(args.repeats):
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        # The last line: the probe's figures.
        rows.append([float(x) for x in proc.stdout.splitlines()[-1].split()])
    base_wall, base_cpu, add_wall, add_cpu = (
        statistics.median(col) for col in zip(*rows))
    print(f'import mmpretrain.models: {base_wall:.3f} s wall, '
          f'{base_cpu:.3f} s CPU (median of {args.repeats})')
    print(f'then import mmbake adds: {add_wall:.3f} s wall, '
          f'{add_cpu:.3f} s CPU (median of {args.repeats})')


if __name__ == '__main__':
    main()
