"""The study runner and its report: the declarations, the checkpoint check,
the committed results and their reports, a smoke study of one arm of the
budget map through the real tools on a few dozen real images (train, test,
calibrate, resume, report), and a short training run of each other arm."""
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
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
HELDOUT = ('benchmarks/configs/resnet18_1xb128-multistep_'
           'fashion-mnist-heldout.py')


def test_the_budget_map_as_declared():
    runs = study.load_study(MAP)['runs']
    assert sorted((r['arm'], r['group'], r['seed']) for r in runs) == sorted(
        (arm, n, seed) for arm in ('ce', 'ls', 'bake_default', 'bake_authors')
        for n in (1024, 8192, 32768) for seed in (0, 1, 2))
    # Every run: 1,024 iterations of 128 images; an epoch of bake_authors
    # ('anchors', 4 images per anchor) is 4 N images.
    for run in runs:
        per_epoch = run['group'] * (4 if run['arm'] == 'bake_authors' else 1)
        assert run['iterations'] == 1024
        assert run['epochs'] * per_epoch == 1024 * 128
        assert 'param_scheduler.0.milestones=[512,768]' in run['options']
    epochs = {(r['arm'], r['group']): r['epochs'] for r in runs}
    assert (epochs[('ce', 1024)], epochs[('ce', 32768)]) == (128, 4)
    assert (epochs[('bake_authors', 1024)], epochs[('bake_authors',
                                                    32768)]) == (32, 1)


# Study -> the commit its runs were made at (all 1,024 iterations of 128
# images, with the test tool's reliability bins), or None for the two old
# studies converted from the scripts of their time.
COMMITTED = dict(
    accuracy_fashion_mnist=None,
    equal_compute_fashion_mnist=None,
    budget_map_fashion_mnist='19708c4',
    calibration_fashion_mnist='c58fcbf')


@pytest.mark.parametrize('name', sorted(COMMITTED))
def test_committed_results_and_their_report(name, tmp_path):
    """The results hold the declaration as its file gives it, and the
    committed tables are the report of the JSON."""
    path = str(tmp_path / f'{name}.json')
    shutil.copy(osp.join(RESULTS, f'{name}.json'), path)
    with open(path) as f:
        results = json.load(f)
    assert results['declaration'] == study.load_study(
        osp.join(STUDIES, f'{name}.py'))
    paths = report.write_report(path)
    with open(paths['markdown']) as f, open(osp.join(RESULTS,
                                                     f'{name}.md')) as g:
        assert f.read() == g.read()
    assert osp.getsize(paths['plot']) > 0
    commit = COMMITTED[name]
    assert ('reliability' in paths) == bool(commit)
    if not commit:
        return
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


def test_verify_reads_the_checkpoint(tmp_path):
    """A file as the runner saves it: meta with counters and config."""
    options = [
        'train_dataloader.dataset.indices=32',
        'param_scheduler.0.milestones=[4,6]', 'model.head.type=BAKEHead'
    ]
    cfg = Config.fromfile(
        osp.join(REPO_ROOT,
                 study.load_study(MAP)['arms']['ce']['config']))
    cfg.merge_from_dict({
        '.'.join(k): v
        for k, v in map(study.parse_option, options)
    })
    ckpt = str(tmp_path / 'epoch_4.pth')
    meta = dict(epoch=4, iter=8, seed=0, cfg=cfg.pretty_text)
    torch.save(dict(meta=meta), ckpt)
    run = dict(
        arm='a', group=None, seed=0, epochs=4, iterations=8, options=options)
    assert study.verify(ckpt, run, options) == dict(
        epochs=4, iterations=8, images_seen=8 * 128)
    with pytest.raises(RuntimeError, match=r'iterations 8 \(declared 16\)'):
        study.verify(ckpt, dict(run, iterations=16), options)
    wrong = options[:2] + ['model.head.type=LinearClsHead']
    with pytest.raises(
            RuntimeError,
            match=r"model.head.type='BAKEHead' "
            r"\(declared 'LinearClsHead'\)"):
        study.verify(ckpt, run, wrong)


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
    (run, ) = data['runs']
    assert run['arm'] == 'bake_default'
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
    assert run['heldout']['after']['nll'] <= run['heldout']['before']['nll']
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
    ] + [f'{x}.dataset.data_root={fashion_mnist_small_root}' for x in LOADERS]
    result = call_tool([
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'train.py'),
        osp.join(REPO_ROOT, arms[arm]['config']), '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', *options
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Final top-1 (val, epoch 1)' in result.stdout
    log = result.stdout + result.stderr
    assert ('loss_bake' in log) == ('loss_bake:' in log) == (arm[:4] == 'bake')
