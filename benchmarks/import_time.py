"""How long ``import mmbake`` takes on top of ``import mmpretrain.models``.

Each repetition starts a fresh interpreter that imports mmpretrain.models,
then mmbake, and reports the wall-clock and CPU seconds of the second step
alone (the cost a user adds by loading the plugin). Medians are printed.

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
    rows = []
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, '-c', PROBE],
                             check=True,
                             capture_output=True,
                             text=True).stdout
        # The last line: importing mmbake logs its compatibility fixes.
        rows.append([float(x) for x in out.splitlines()[-1].split()])
    base_wall, base_cpu, add_wall, add_cpu = (
        statistics.median(col) for col in zip(*rows))
    print(f'import mmpretrain.models: {base_wall:.3f} s wall, '
          f'{base_cpu:.3f} s CPU (median of {args.repeats})')
    print(f'then import mmbake adds: {add_wall:.3f} s wall, '
          f'{add_cpu:.3f} s CPU (median of {args.repeats})')


if __name__ == '__main__':
    main()
