"""The study runner and its report: the declarations, the checkpoint check,
the old studies' tables from their JSON, a smoke study of one arm of the
budget map through the real tools on a few dozen real images (train, test,
calibrate, report), and a short training run of each other arm's
options."""
import json
import os.path as osp
import shutil
import sys

import pytest
import torch
from mmengine.config import Config

from tests.script_utils import REPO_ROOT, load_script

study = load_script('benchmarks/study.py')
report = load_script('benchmarks/report.py')
STUDIES = osp.join(REPO_ROOT, 'benchmarks', 'studies')
RESULTS = osp.join(REPO_ROOT, 'benchmarks', 'results')
MAP = osp.join(STUDIES, 'budget_map_fashion_mnist.py')
HELDOUT = ('benchmarks/configs/resnet18_1xb128-multistep_'
           'fashion-mnist-heldout.py')


def test_the_budget_map_as_declared():
    declared = study.load_study(MAP)
    runs = declared['runs']
    assert len(runs) == 3 * 4 * 3
    assert {(r['group'], r['seed'])
            for r in runs} == {(n, s)
                               for n in (1024, 8192, 32768)
                               for s in (0, 1, 2)}
    # Every run: 1,024 iterations of 128 images.
    per_epoch = {'ce': 1, 'ls': 1, 'bake_default': 1, 'bake_authors': 4}
    for run in runs:
        assert run['iterations'] == 1024
        assert run['epochs'] * run['group'] * per_epoch[run['arm']] == \
            1024 * 128
        assert 'param_scheduler.0.milestones=[512,768]' in run['options']
    epochs = {(r['arm'], r['group']): r['epochs'] for r in runs}
    assert epochs[('ce', 1024)] == 128 and epochs[('ce', 32768)] == 4
    assert epochs[('bake_authors', 1024)] == 32
    assert epochs[('bake_authors', 32768)] == 1


@pytest.mark.parametrize('name, rows', [
    ('accuracy_fashion_mnist', [
        '| bake | 5 | 20 | 3,120 | 199,680 | 90.86 +- 0.14 |',
        '| bake - vanilla | -0.20 +- 0.26 (better in 2 of 5) |',
        '| bake - label_smoothing | -0.13 +- 0.29 (better in 2 of 5) |',
    ]),
    ('equal_compute_fashion_mnist', [
        '| bake_authors | 3 | 60 | 1,920 | 245,760 | 85.21 +- 0.42 | '
        '0.6278 +- 0.0103 | 14.70 +- 0.16 |',
        '| bake_authors - ce_same_epochs | +3.18 +- 0.70 (better in 3 of 3) '
        '| +0.1257 +- 0.0171 (better in 0 of 3) | +11.69 +- 0.28 (better '
        'in 0 of 3) |',
        '| bake_authors - ce_same_iterations | -0.05 +- 0.36 (better in 1 '
        'of 3) | -0.0962 +- 0.0130 (better in 3 of 3) | +4.55 +- 0.09 '
        '(better in 0 of 3) |',
    ]),
])
def test_the_old_studies_reproduced_from_their_json(name, rows, tmp_path):
    path = str(tmp_path / f'{name}.json')
    shutil.copy(osp.join(RESULTS, f'{name}.json'), path)
    with open(path) as f:
        results = json.load(f)
    # The results hold the declaration as the declaration file gives it.
    assert results['declaration'] == study.load_study(
        osp.join(STUDIES, f'{name}.py'))
    paths = report.write_report(path)
    with open(paths['markdown']) as f:
        text = f.read()
    for row in rows:
        assert row in text
    assert osp.getsize(paths['plot']) > 0 and 'reliability' not in paths


@pytest.mark.parametrize('name, commit',
                         [('budget_map_fashion_mnist', '19708c4'),
                          ('calibration_fashion_mnist', 'c58fcbf')])
def test_committed_results_hold_every_declared_run(name, commit, tmp_path):
    path = str(tmp_path / f'{name}.json')
    shutil.copy(osp.join(RESULTS, f'{name}.json'), path)
    with open(path) as f:
        results = json.load(f)
    assert results['declaration'] == study.load_study(
        osp.join(STUDIES, f'{name}.py'))
    assert results['code']['commit'].startswith(commit)
    assert results['code']['uncommitted'] == []
    runs = results['runs']
    assert sorted(map(study.run_key, runs)) == sorted(
        map(study.run_key, results['declaration']['runs']))
    for run in runs:
        assert run['iterations'] == 1024 and run['images_seen'] == 131072
        assert sum(run['reliability']['count']) == 10000  # test images
        for key in ('top1', 'nll', 'ece', 'confidence_gap'):
            assert isinstance(run[key], float)
        if 'calibrate' in results['declaration']:
            # Fitted on training images 50,000-54,999; the folded model
            # keeps its top-1 on the 10,000 test images.
            assert run['heldout']['images'] == 5000
            assert sum(run['reliability_ts']['count']) == 10000
            # (one image is 0.01 points; the log holds float32)
            assert run['top1_ts'] == pytest.approx(run['top1'], abs=1e-4)
            assert run['temperature'] > 0
            assert run['heldout']['after']['nll'] <= \
                run['heldout']['before']['nll']
    # The committed tables are the report of this JSON.
    paths = report.write_report(path)
    with open(paths['markdown']) as f, open(osp.join(RESULTS,
                                                     f'{name}.md')) as g:
        assert f.read() == g.read()
    assert osp.getsize(paths['reliability']) > 0


def a_checkpoint(path, options, epoch=4, iteration=8, seed=0):
    """A file as the runner saves it: meta with counters and config."""
    cfg = Config.fromfile(
        osp.join(
            REPO_ROOT, 'benchmarks/configs/resnet18_1xb128-multistep_'
            'fashion-mnist.py'))
    cfg.merge_from_dict({
        '.'.join(key): value
        for key, value in map(study.parse_option, options)
    })
    torch.save(
        dict(
            meta=dict(
                epoch=epoch, iter=iteration, seed=seed, cfg=cfg.pretty_text)),
        path)
    return path


def test_verify_reads_the_checkpoint(tmp_path):
    options = [
        'train_dataloader.dataset.indices=32',
        'param_scheduler.0.milestones=[4,6]', 'model.head.type=BAKEHead'
    ]
    run = dict(
        arm='a', group=None, seed=0, epochs=4, iterations=8, options=options)
    ckpt = a_checkpoint(str(tmp_path / 'epoch_4.pth'), options)
    assert study.verify(ckpt, run, options) == dict(
        epochs=4, iterations=8, images_seen=8 * 128)
    wrong = dict(run, iterations=16)
    with pytest.raises(RuntimeError, match=r'iterations 8 \(declared 16\)'):
        study.verify(ckpt, wrong, options)
    with pytest.raises(
            RuntimeError,
            match=r"model.head.type='BAKEHead' \(declared "
            r"'LinearClsHead'\)"):
        study.verify(ckpt, run,
                     options[:2] + ['model.head.type='
                                    'LinearClsHead'])


SMOKE = '''
import runpy
MAP = runpy.run_path({map!r})
TINY = ['train_dataloader.batch_size=16', 'param_scheduler.0.milestones=[4,6]']
EPOCHS = dict(bake_default=4)
STUDY = dict(
    name='smoke', question='Does every arm run?', record_scores=True,
    arms={{arm: dict(config=MAP['CONFIG'], options=opts + TINY)
           for arm, opts in MAP['ARMS'].items()}},
    runs=[dict(arm=arm, seed=0, group=32, epochs=e, iterations=8, options=[
        'train_dataloader.dataset.indices=32', f'train_cfg.max_epochs={{e}}',
        f'train_cfg.val_interval={{e}}',
        f'default_hooks.checkpoint.interval={{e}}'])
          for arm, e in EPOCHS.items()],
    compare={compare!r}, group_label='images',
    calibrate=dict(config={heldout!r}, options=[
        'val_dataloader.dataset.dataset.data_root=' + {root!r},
        'val_dataloader.dataset.num_splits=2',
        'val_dataloader.dataset.fold=1']))
'''


def declare(path, compare, data_root):
    with open(path, 'w') as f:
        f.write(
            SMOKE.format(
                map=MAP, compare=compare, heldout=HELDOUT, root=data_root))
    return str(path)


def test_smoke_study(fashion_mnist_small_root, tmp_path, capsys):
    compare = [['bake_default', 'ce']]
    decl = declare(tmp_path / 'smoke.py', compare, fashion_mnist_small_root)
    results = str(tmp_path / 'smoke.json')
    argv = [
        decl, '--data-root', fashion_mnist_small_root, '--results', results,
        '--log-dir',
        str(tmp_path / 'logs'), '--jobs', '1', '--threads', '1'
    ]
    study.main(argv)
    with open(results) as f:
        data = json.load(f)
    assert [r['arm'] for r in sorted(data['runs'], key=lambda r: r['arm'])
            ] == ['bake_default']
    for run in data['runs']:
        # 8 iterations of 16 images, verified from the final checkpoint.
        assert (run['iterations'], run['images_seen']) == (8, 128)
        assert 0 <= run['top1'] <= 100 and run['nll'] > 0
        assert -100 <= run['confidence_gap'] <= 100
        # The reliability bins hold the 200 test images, before and after
        # temperature scaling (fitted on the last 160 training images).
        assert sum(run['reliability']['count']) == 200
        assert sum(run['reliability_ts']['count']) == 200
        assert run['heldout']['images'] == 160 and run['temperature'] > 0
        assert run['top1_ts'] == run['top1']
        assert run['heldout']['after']['nll'] <= run['heldout']['before'][
            'nll']
        assert osp.isfile(tmp_path / 'logs' / f'{run["name"]}.json')
    assert data['code']['digest'] == study.code_digest()

    # Resumed: nothing left to run, nothing changes.
    capsys.readouterr()
    study.main(argv)
    assert '0 of 1 runs to do' in capsys.readouterr().out
    with open(results) as f:
        assert json.load(f) == data

    # A changed declaration is refused, naming what changed.
    declare(tmp_path / 'smoke.py', [['ce', 'bake_default']],
            fashion_mnist_small_root)
    with pytest.raises(SystemExit, match=r"keys \['compare'\] differ"):
        study.main(argv)

    paths = report.write_report(results)
    with open(paths['markdown']) as f:
        text = f.read()
    assert '## images = 32' in text
    assert '| bake_default - ce |' in text
    assert osp.getsize(paths['reliability']) > 0


@pytest.mark.parametrize('arm', ['ce', 'ls', 'bake_authors'])
def test_the_other_arms_train(arm, fashion_mnist_small_root, tmp_path,
                              call_tool):
    """The arms that the smoke study leaves out: their options train (one
    epoch of 32 images, batch 16) with the config the map runs them on."""
    arms = study.load_study(MAP)['arms']
    options = arms[arm]['options'] + [
        'train_dataloader.batch_size=16',
        'train_dataloader.dataset.indices=32', 'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1'
    ] + [
        f'{loader}.dataset.data_root={fashion_mnist_small_root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]
    result = call_tool([
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'train.py'),
        osp.join(REPO_ROOT, arms[arm]['config']), '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *options
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Final top-1 (val, epoch 1)' in result.stdout
    log = result.stdout + result.stderr
    if arm in ('ce', 'ls'):
        assert 'loss_bake' not in log
    else:
        assert 'loss_bake:' in log
