"""benchmarks/report.py on a tiny hand-made result file."""
import json
import os.path as osp

import pytest

from tests.script_utils import load_script

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


report = load_script('benchmarks/report.py')

# top-1 per (method, seed); BAKE - vanilla = +0.5, +0.2, -0.1 (2 wins).
TOP1 = {
    'vanilla': {0: 90.0, 1: 90.5, 2: 91.0},
    'label_smoothing': {0: 90.2, 1: 90.4, 2: 91.3},
    'bake': {0: 90.5, 1: 90.7, 2: 90.9},
}


def tiny_results() -> dict:
    runs = [
        dict(method=m, seed=s, top1=v, images_seen=1000, train_seconds=10.0)
        for m, by_seed in TOP1.items() for s, v in by_seed.items()
    ]
    return {'dataset': 'Fashion-MNIST (tiny)', 'config': {}, 'runs': runs}


def test_summarize_means_stds_and_pairs():
    summary = report.summarize(tiny_results())
    vanilla = summary['methods']['vanilla']
    assert vanilla['seeds'] == [0, 1, 2]
    assert vanilla['mean'] == pytest.approx(90.5)
    assert vanilla['std'] == pytest.approx(0.5)  # sample std (ddof=1)
    assert vanilla['images_seen'] == [1000]

    bake_vs_vanilla = summary['paired']['bake-vanilla']
    assert bake_vs_vanilla['diffs'] == pytest.approx([0.5, 0.2, -0.1])
    assert bake_vs_vanilla['mean'] == pytest.approx(0.2)
    assert bake_vs_vanilla['std'] == pytest.approx(0.3)
    assert (bake_vs_vanilla['wins'], bake_vs_vanilla['ties'],
            bake_vs_vanilla['losses']) == (2, 0, 1)
    bake_vs_ls = summary['paired']['bake-label_smoothing']
    assert bake_vs_ls['diffs'] == pytest.approx([0.3, 0.3, -0.4])
    assert bake_vs_ls['wins'] == 2


def test_summarize_pairs_only_common_seeds():
    results = tiny_results()
    results['runs'] = [
        r for r in results['runs']
        if not (r['method'] == 'bake' and r['seed'] == 2)
    ]
    summary = report.summarize(results)
    assert summary['methods']['bake']['seeds'] == [0, 1]
    assert summary['paired']['bake-vanilla']['seeds'] == [0, 1]
    assert summary['paired']['bake-vanilla']['wins'] == 2


def test_markdown_table():
    text = report.to_markdown(tiny_results())
    lines = text.splitlines()
    assert lines[0] == ('| seed | vanilla CE | label smoothing | BAKE | '
                        'BAKE - vanilla CE | BAKE - label smoothing |')
    assert '| 2 | 91.00 | 91.30 | 90.90 | -0.10 | -0.40 |' in lines
    assert ('| mean +- std | 90.50 +- 0.50 | 90.63 +- 0.59 | 90.70 +- 0.20 '
            '| +0.20 +- 0.30 | +0.07 +- 0.40 |') in lines
    assert '| BAKE wins |  |  |  | 2 of 3 | 2 of 3 |' in lines


def test_check_results_rejects_bad_runs():
    results = tiny_results()
    results['runs'].append(dict(results['runs'][0]))
    with pytest.raises(ValueError, match='appears twice'):
        report.summarize(results)
    results = tiny_results()
    results['runs'][0]['method'] = 'mixup'
    with pytest.raises(ValueError, match='method must be one of'):
        report.summarize(results)
    results = tiny_results()
    del results['runs'][0]['top1']
    with pytest.raises(ValueError, match='lacks the keys'):
        report.summarize(results)


def test_write_report_and_cli(tmp_path, capsys):
    import matplotlib.image as mpimg

    path = str(tmp_path / 'acc.json')
    with open(path, 'w') as f:
        json.dump(tiny_results(), f)
    report.main([path])
    assert '2 of 3' in capsys.readouterr().out
    with open(tmp_path / 'acc.md') as f:
        assert f.read() == report.to_markdown(tiny_results())
    image = mpimg.imread(str(tmp_path / 'acc.png'))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    # A drawing, not a blank canvas.
    assert image[..., :3].std() > 0.05

    # Partial results (one method so far) still produce a report.
    results = tiny_results()
    results['runs'] = [r for r in results['runs'] if r['method'] == 'bake']
    with open(path, 'w') as f:
        json.dump(results, f)
    paths = report.write_report(path, plot_path=str(tmp_path / 'p.png'))
    assert osp.isfile(paths['plot'])


def write_scalars(path, records):
    with open(path, 'w') as f:
        for record in records:
            f.write(json.dumps(record) + '\n')


def test_plot_curves(tmp_path):
    import matplotlib.image as mpimg

    bake = tmp_path / 'bake.json'
    write_scalars(bake, [
        dict(lr=0.1, loss=2.0, loss_ce=1.9, loss_bake=0.1, epoch=1, iter=5,
             step=5),
        dict(lr=0.1, loss=1.0, loss_ce=0.8, loss_bake=0.2, epoch=2, iter=15,
             step=15),
        {'accuracy/top1': 80.0, 'step': 1},
        {'accuracy/top1': 85.0, 'step': 2},
    ])
    plain = tmp_path / 'plain.json'
    write_scalars(plain, [
        dict(lr=0.1, loss=2.0, epoch=1, iter=5, step=5),
        {'accuracy/top1': 82.0, 'step': 2},
    ])
    records = report.read_scalars(str(bake))
    assert [r['iter'] for r in records['train']] == [5, 15]
    assert [r['accuracy/top1'] for r in records['val']] == [80.0, 85.0]

    out = str(tmp_path / 'curves.png')
    report.main([
        '--curves', f'BAKE={bake}', f'vanilla={plain}', '--iters-per-epoch',
        '10', '--plot', out
    ])
    image = mpimg.imread(out)
    assert image.shape[1] > image.shape[0] > 200
    with pytest.raises(ValueError, match='iters_per_epoch'):
        report.plot_curves({'BAKE': str(bake)}, out, 0)
    with pytest.raises(SystemExit):
        report.main(['--curves', 'BAKE=/no/such.json', '--plot', out,
                     '--iters-per-epoch', '10'])
