"""benchmarks/equal_compute.py: arm accounting, generated configs, a tiny
study through tools/train.py on real images, and its report."""
import json
import os.path as osp

import pytest
from mmengine.config import Config

from tests.script_utils import REPO_ROOT, load_script

study = load_script('benchmarks/equal_compute.py')
arms = load_script('benchmarks/equal_compute_arms.py')
study_report = load_script('benchmarks/equal_compute_report.py')

ARMS = ('ce_same_epochs', 'ce_same_iterations', 'ls_same_iterations',
        'bake_authors')


def test_declared_accounting():
    """N = 1024, B = 128, E = 60: BAKE and the controls at 4x the images."""
    plans = {arm: arms.arm_plan(arm, 1024, 128, 60) for arm in ARMS}
    assert plans['ce_same_epochs'] == dict(
        epochs=60, iterations=480, images_seen=61440, milestones=[240, 360])
    for arm in ('ce_same_iterations', 'ls_same_iterations'):
        assert plans[arm] == dict(
            epochs=240, iterations=1920, images_seen=245760,
            milestones=[960, 1440])
    # 32 anchors x 4 per batch: every image an anchor once, 32 batches.
    assert plans['bake_authors'] == dict(
        epochs=60, iterations=1920, images_seen=245760,
        milestones=[960, 1440])
    # The authors' E = 200 keeps the same shape.
    assert arms.arm_plan('bake_authors', 1024, 128, 200)['milestones'] == [
        3200, 4800
    ]
    with pytest.raises(ValueError, match='arm must be one of'):
        arms.arm_plan('mixup', 1024, 128, 60)
    # 3 epochs of 2 batches: 6 iterations cannot drop at 50 % and 75 %.
    with pytest.raises(ValueError, match='not a multiple of 4'):
        arms.arm_plan('ce_same_epochs', 256, 128, 3)


@pytest.mark.parametrize('arm', ARMS)
def test_arm_configs_build_what_they_promise(arm):
    base = osp.join(REPO_ROOT, arms.BASE_CONFIG)
    text = arms.arm_config(arm, 1024, 128, 60, base)
    cfg = Config.fromstring(text, '.py')
    plan = arms.arm_plan(arm, 1024, 128, 60)
    head = cfg.model.head
    assert cfg.train_dataloader.batch_size == 128
    assert cfg.train_dataloader.dataset.indices == 1024
    assert cfg.train_cfg.max_epochs == plan['epochs']
    assert cfg.train_cfg.val_interval == plan['epochs']
    assert cfg.optim_wrapper.optimizer == dict(
        type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=False)
    assert cfg.param_scheduler == [
        dict(type='MultiStepLR', by_epoch=False,
             milestones=plan['milestones'], gamma=0.1)
    ]
    assert [e['type'] for e in cfg.val_evaluator] == ['Accuracy',
                                                      'Calibration']
    # The augmentation and the test set of the Fashion-MNIST configs.
    assert [t['type'] for t in cfg.train_dataloader.dataset.pipeline] == [
        'RandomCrop', 'RandomFlip', 'PackInputs'
    ]
    assert cfg.val_dataloader.dataset.test_mode is True
    if arm == 'bake_authors':
        assert head.type == 'BAKEHead'
        assert (head.omega, head.temperature, head.bake_weight) == (0.5, 4.0,
                                                                    1.0)
        assert cfg.train_dataloader.batch_sampler == dict(
            type='ClassAwareBatchSampler', num_instances=4,
            epoch_mode='anchors')
    else:
        assert head.type == 'LinearClsHead'
        assert 'omega' not in head
        assert cfg.train_dataloader.batch_sampler is None
        expected_loss = ('LabelSmoothLoss' if arm == 'ls_same_iterations'
                         else 'CrossEntropyLoss')
        assert head.loss.type == expected_loss


def run_tiny_study(tmp_path, data_root, *extra):
    args = [
        '--train-images', '64', '--batch-size', '16', '--epochs', '1',
        '--seeds', '0', '--jobs', '2', '--data-root', data_root,
        '--results', str(tmp_path / 'study.json'), '--work-dir',
        str(tmp_path / 'work'), '--log-dir', str(tmp_path / 'logs'),
        '--figure', str(tmp_path / 'figure.png')
    ]
    study.main(args + list(extra))
    with open(tmp_path / 'study.json') as f:
        return json.load(f)


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_tiny_study_end_to_end(tmp_path, fashion_mnist_small_root, capsys):
    """64 images, batch 16, E = 1: four real trainings, then a rerun."""
    with pytest.raises(ValueError, match='declare the study first'):
        run_tiny_study(tmp_path, fashion_mnist_small_root)
    declared = run_tiny_study(tmp_path, fashion_mnist_small_root,
                              '--declare')
    assert declared['runs'] == []
    assert declared['config']['declared']['epochs'] == 1
    assert 'none' in declared['config']['declared']['tuning']
    assert set(declared['config']['protocol']['arms']) == set(ARMS)

    results = run_tiny_study(tmp_path, fashion_mnist_small_root)
    runs = {run['arm']: run for run in results['runs']}
    assert sorted(runs) == sorted(ARMS)
    # Read back from each final checkpoint: plain epochs are 4 batches of
    # 16, an anchor epoch 16 batches (4 anchors x 4 per batch).
    expected = {
        'ce_same_epochs': (1, 4, 64),
        'ce_same_iterations': (4, 16, 256),
        'ls_same_iterations': (4, 16, 256),
        'bake_authors': (1, 16, 256),
    }
    for arm, run in runs.items():
        assert set(study_report.RUN_KEYS) <= set(run)
        assert (run['epochs'], run['iterations'],
                run['images_seen']) == expected[arm]
        assert run['seed'] == 0
        assert 0.0 <= run['top1'] <= 100.0
        assert run['nll'] > 0.0
        assert 0.0 <= run['ece'] <= 100.0
        assert run['train_seconds'] > 0 and run['cpu_seconds'] > 0
        assert osp.isfile(tmp_path / 'logs' / f'{arm}_seed0.json')
    execution = results['config']['execution']
    assert execution['code_digest'] and 'commit' in execution
    assert execution['machine']['cpus'] >= 1
    assert osp.isfile(tmp_path / 'study.md')
    assert osp.isfile(tmp_path / 'figure.png')
    out = capsys.readouterr().out
    assert 'BAKE (authors) - CE, same iterations, top-1' in out

    # Resumable: nothing left to run, nothing changes.
    again = run_tiny_study(tmp_path, fashion_mnist_small_root)
    assert again['runs'] == results['runs']
    assert '0 runs to do' in capsys.readouterr().out
    # The declaration is fixed.
    with pytest.raises(ValueError, match='declares epochs=1'):
        study.main([
            '--train-images', '64', '--batch-size', '16', '--epochs', '2',
            '--seeds', '0', '--results', str(tmp_path / 'study.json')
        ])
    with pytest.raises(ValueError, match='exists'):
        run_tiny_study(tmp_path, fashion_mnist_small_root, '--declare')


def test_verify_run_names_every_mismatch():
    plan = arms.arm_plan('bake_authors', 1024, 128, 60)
    cfg = arms.arm_config('bake_authors', 1024, 128, 60,
                          osp.join(REPO_ROOT, arms.BASE_CONFIG))
    meta = dict(epoch=60, iter=plan['iterations'], seed=3,
                cfg=Config.fromstring(cfg, '.py').pretty_text)
    assert arms.verify_run(meta, 'bake_authors', 3, 1024, 128, 60) == dict(
        epochs=60, iterations=1920, images_seen=245760)
    short = dict(meta, iter=1919)
    with pytest.raises(RuntimeError, match='iter: 1919, expected 1920'):
        arms.verify_run(short, 'bake_authors', 3, 1024, 128, 60)
    # A plain-CE arm's checkpoint is not a BAKE run.
    with pytest.raises(RuntimeError, match="head: 'BAKEHead'"):
        arms.verify_run(meta, 'ce_same_iterations', 3, 1024, 128, 15)


def tiny_results() -> dict:
    """Two seeds; BAKE better than CE-same-epochs in top-1 in both, better
    than CE-same-iterations in one."""
    values = {
        # arm: {seed: (top1, nll, ece)}
        'ce_same_epochs': {0: (80.0, 0.60, 5.0), 1: (81.0, 0.58, 4.0)},
        'ce_same_iterations': {0: (82.0, 0.70, 8.0), 1: (83.5, 0.66, 7.0)},
        'ls_same_iterations': {0: (82.5, 0.50, 3.0), 1: (83.0, 0.52, 2.0)},
        'bake_authors': {0: (82.5, 0.55, 6.0), 1: (83.0, 0.57, 9.0)},
    }
    runs = []
    for arm, by_seed in values.items():
        long = arm != 'ce_same_epochs'
        for seed, (top1, nll, ece) in by_seed.items():
            runs.append(dict(
                arm=arm, seed=seed, top1=top1, nll=nll, ece=ece,
                epochs=4 if arm.endswith('iterations') else 1,
                iterations=16 if long else 4,
                images_seen=256 if long else 64, train_seconds=10.0))
    return {'dataset': 'Fashion-MNIST (tiny)', 'config': {}, 'runs': runs}


def test_report_on_a_hand_made_file(tmp_path, capsys):
    summary = study_report.summarize(tiny_results())
    vs_epochs = summary['top1']['paired']['bake_authors-ce_same_epochs']
    assert vs_epochs['diffs'] == pytest.approx([2.5, 2.0])
    assert vs_epochs['mean'] == pytest.approx(2.25)
    vs_iters = summary['top1']['paired']['bake_authors-ce_same_iterations']
    assert vs_iters['diffs'] == pytest.approx([0.5, -0.5])
    assert study_report.better_count(vs_iters, 'top1') == 1
    # Lower is better for NLL and ECE.
    nll = summary['nll']['paired']['bake_authors-ce_same_iterations']
    assert nll['diffs'] == pytest.approx([-0.15, -0.09])
    assert study_report.better_count(nll, 'nll') == 2
    ece = summary['ece']['paired']['bake_authors-ce_same_iterations']
    assert ece['diffs'] == pytest.approx([-2.0, 2.0])
    assert study_report.better_count(ece, 'ece') == 1
    assert summary['counts']['bake_authors'] == dict(epochs=[1],
                                                     iterations=[16])

    text = study_report.to_markdown(tiny_results(), summary)
    lines = text.splitlines()
    assert ('| BAKE (authors) | 1 | 16 | 256 | 82.75 +- 0.35 | '
            '0.5600 +- 0.0141 | 7.50 +- 2.12 | 10 |') in lines
    assert ('| BAKE (authors) - CE, same iterations | +0.00 +- 0.71 '
            '(better in 1 of 2) | -0.1200 +- 0.0424 (better in 2 of 2) | '
            '+0.00 +- 2.83 (better in 1 of 2) |') in lines
    assert '| 1 | 81.00 | 83.50 | 83.00 | 83.00 | +2.00 | -0.50 |' in lines

    import matplotlib.image as mpimg
    path = str(tmp_path / 'tiny.json')
    with open(path, 'w') as f:
        json.dump(tiny_results(), f)
    study_report.main([path])
    out = capsys.readouterr().out
    assert ('BAKE (authors) - CE, same epochs, top-1 (%): +2.25 points '
            '(std 0.35); better in 2 of 2 seeds') in out
    image = mpimg.imread(str(tmp_path / 'tiny.png'))
    assert image.shape[0] > 600 and image[..., :3].std() > 0.05

    bad = tiny_results()
    bad['runs'][0]['arm'] = 'mixup'
    with pytest.raises(ValueError, match='arm must be one of'):
        study_report.summarize(bad)
    bad = tiny_results()
    del bad['runs'][0]['nll']
    with pytest.raises(ValueError, match='lacks the keys'):
        study_report.summarize(bad)
