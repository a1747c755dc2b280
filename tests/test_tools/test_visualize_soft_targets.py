"""BAKE's soft targets: ``mmbake.visualization`` on real batches of the small
data root, ``SoftTargetVisualizationHook`` and
tools/analysis_tools/visualize_soft_targets.py, and ``Calibration`` in the
runner, on one tiny real training run.

The BAKE Fashion-MNIST config trains for 3 epochs on the small real data
root (320 training images, batch 16) through tools/train.py, with
``SoftTargetVisualizationHook`` drawing every 2 epochs (pictures after
epochs 2 and 3, the last, not after 1) and ``Calibration`` beside
``Accuracy`` in the validation. tools/analysis_tools/visualize_soft_targets.py
then draws two class-aware batches from the final checkpoint, and its model
reproduces the top-1, NLL and ECE that the run's validation logged.
"""
import copy
import json
import os.path as osp
import sys
from glob import glob

import matplotlib.image as mpimg
import pytest
import torch
import torch.nn.functional as F

from tests.script_utils import REPO_ROOT, load_script

TOOL = osp.join(REPO_ROOT, 'tools', 'analysis_tools',
                'visualize_soft_targets.py')
BAKE_CONFIG = osp.join(REPO_ROOT, 'configs', 'bake',
                       'resnet18_1xb64_fashion-mnist.py')


def test_hook_tool_and_calibration_on_one_run(tmp_path, call_tool,
                                              tiny_cfg_options,
                                              fashion_mnist_small_root):
    config = tmp_path / 'bake_with_hook.py'
    # mmbake.engine is imported explicitly, so the hook is registered even
    # where the package root does not import it.
    config.write_text(
        f"_base_ = [{BAKE_CONFIG!r}]\n"
        "custom_imports = dict(imports=['mmbake', 'mmbake.engine'], "
        "allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='SoftTargetVisualizationHook', "
        "interval=2, max_images=8, batch_size=16)]\n"
        "val_evaluator = [dict(type='Accuracy', topk=(1, )), "
        "dict(type='Calibration')]\n")
    work_dir = tmp_path / 'work'
    trained = call_tool([
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'train.py'),
        str(config), '--work-dir',
        str(work_dir), '--cfg-options', *tiny_cfg_options,
        'train_cfg.max_epochs=3', 'train_cfg.val_interval=3'
    ])
    assert trained.returncode == 0, trained.stderr[-3000:]
    drawn = sorted(p.name for p in (work_dir / 'soft_targets').iterdir())
    assert drawn == ['epoch_2_batch0.png', 'epoch_3_batch0.png']
    log = trained.stdout + trained.stderr
    assert log.count('Soft-target picture ') == 2
    assert 'same_class_affinity=' in log
    image = mpimg.imread(str(work_dir / 'soft_targets' / drawn[1]))
    # 8 images in one row of 8 cells, each with its text block.
    assert image.shape[1] > image.shape[0] > 200
    assert image[..., :3].std() > 0.05

    checkpoint = str(work_dir / 'epoch_3.pth')
    out_dir = str(tmp_path / 'pictures')
    tool = call_tool([
        sys.executable, TOOL,
        str(config), checkpoint, '--out-dir', out_dir, '--num-batches', '2',
        '--batch-size', '16', '--max-images', '8', '--ncols', '4',
        '--cfg-options', *tiny_cfg_options
    ])
    assert tool.returncode == 0, tool.stderr[-3000:]
    paths = [osp.join(out_dir, f'soft_targets_batch{i}.png') for i in (0, 1)]
    assert [ln for ln in tool.stdout.splitlines()
            if ln.startswith('Wrote ')] == [f'Wrote {p}' for p in paths]
    assert tool.stdout.count('same_class_affinity=') == 2
    images = [mpimg.imread(path) for path in paths]
    for image in images:  # two rows of four cells (8 images, --ncols 4)
        assert image.shape[0] > 400 and image.shape[1] > 400
        assert image[..., :3].std() > 0.05
    assert images[0].tobytes() != images[1].tobytes()

    # The tool's model is the runner's model: in eval mode it reproduces
    # the validation after the last epoch (this needs the config's
    # normalisation in the model, see the tool's main).
    (scalars, ) = glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))
    with open(scalars) as f:
        logged = [json.loads(line) for line in f][-1]
    assert logged['step'] == 3
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmpretrain.registry import DATASETS

    from mmbake.evaluation import Calibration
    cfg = Config.fromfile(BAKE_CONFIG)
    cfg.test_dataloader.dataset.data_root = fashion_mnist_small_root
    with torch.no_grad():
        model = load_script(TOOL).build_model(cfg, checkpoint)
        assert not model.training
        test_set = DATASETS.build(cfg.test_dataloader.dataset)
        samples = model.test_step(pseudo_collate(list(test_set)))
    assert len(samples) == 200
    scores = torch.stack([s.pred_score for s in samples]).double()
    labels = torch.cat([s.gt_label for s in samples])
    expected = Calibration.calculate(scores, labels)
    top1 = 100 * float((scores.argmax(1) == labels).double().mean())
    assert logged['accuracy/top1'] == pytest.approx(top1, abs=1e-4)
    for key in ('nll', 'ece', 'confidence_gap'):
        assert logged[f'calibration/{key}'] == pytest.approx(
            expected[key], rel=1e-5, abs=1e-6), key
    assert 0.0 < expected['ece'] < 100.0


def test_predict_soft_targets_on_class_aware_batches(fashion_mnist_small_root):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.datasets import FashionMNIST
    from mmpretrain.registry import MODELS

    from mmbake.models import knowledge_ensemble
    from mmbake.visualization import (build_class_aware_batches,
                                      predict_soft_targets, soft_target_stats)

    cfg = Config.fromfile(BAKE_CONFIG)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = fashion_mnist_small_root
    cfg.train_dataloader.batch_size = 16
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    batches = build_class_aware_batches(cfg, num_batches=2, seed=3)
    assert len(batches['batches']) == 2
    assert batches['classes'][0] == 'T-shirt/top'
    batch = batches['batches'][0]
    labels = [int(s.gt_label[0]) for s in batch['data_samples']]
    # Class-aware: every anchor (even position) is followed by a mate of
    # its class, and the batch has the training batch size.
    assert len(labels) == 16 and labels[0::2] == labels[1::2]
    assert all(i < 320 for i in batches['indices'][0])  # training images
    # The test pipeline, no random crop or flip: a drawn image is the
    # stored image.
    plain = FashionMNIST(
        fashion_mnist_small_root, 'train', pipeline=[dict(type='PackInputs')])
    for position, index in enumerate(batches['indices'][0][:6]):
        torch.testing.assert_close(batch['inputs'][position],
                                   plain[index]['inputs'])

    bn_before = copy.deepcopy(model.backbone.bn1.running_mean)
    result = predict_soft_targets(model, batch)
    # Restored to training mode, and eval mode left BN statistics alone.
    assert model.training
    torch.testing.assert_close(model.backbone.bn1.running_mean, bn_before)
    assert result['omega'] == 0.5 and result['temperature'] == 4.0
    assert result['gt_labels'].tolist() == labels
    targets = result['targets']
    assert targets.shape == (16, 10)
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        feats = model.extract_feat(data['inputs'])
        logits = model.head(feats)
        expected = knowledge_ensemble(model.head.pre_logits(feats), logits)
    torch.testing.assert_close(targets, expected)
    torch.testing.assert_close(result['own'], torch.softmax(logits / 4, 1))

    stats = soft_target_stats(result)
    gt = torch.tensor(labels)
    assert stats['target_top1'] == pytest.approx(100 * float(
        (targets.argmax(1) == gt).float().mean()))
    assert stats['own_gt_prob'] == pytest.approx(
        100 * float(result['own'][torch.arange(16), gt].mean()))
    assert stats['same_class_affinity'] > 0


def test_batch_affinity_and_same_class_ratio():
    from mmbake.visualization import batch_affinity, soft_target_stats

    # Two tight clusters: images of a class point the same way.
    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    affinity = batch_affinity(feats)
    torch.testing.assert_close(affinity.sum(1), torch.ones(4))
    assert torch.all(affinity.diagonal() == 0)
    cos = F.normalize(feats, dim=1) @ F.normalize(feats, dim=1)[0]
    torch.testing.assert_close(affinity[0, 1:], torch.softmax(cos[1:], 0))

    result = dict(
        own=torch.eye(2)[[0, 0, 1, 1]],
        targets=torch.eye(2)[[0, 1, 1, 1]],
        gt_labels=torch.tensor([0, 0, 1, 1]),
        pre_logits=feats)
    stats = soft_target_stats(result)
    assert set(stats) == {
        'own_top1', 'target_top1', 'own_gt_prob', 'target_gt_prob',
        'same_class_affinity'
    }
    assert stats['own_top1'] == 100.0 and stats['target_top1'] == 75.0
    # One same-class image among three others: share 1/3.
    same = affinity[[0, 1, 2, 3], [1, 0, 3, 2]]
    assert stats['same_class_affinity'] == pytest.approx(3 *
                                                         float(same.mean()))
    assert stats['same_class_affinity'] > 1.0
    with pytest.raises(ValueError, match='batch of >= 2 images'):
        soft_target_stats({k: v[:1] for k, v in result.items()})


def test_hook_and_tool_reject_bad_arguments(tmp_path, capsys):
    from mmpretrain.registry import HOOKS

    from mmbake.engine import SoftTargetVisualizationHook
    assert HOOKS.get('SoftTargetVisualizationHook') is \
        SoftTargetVisualizationHook
    for name, value in (('interval', 0), ('num_batches', 0),
                        ('interval', True), ('max_images', -1), ('batch_size',
                                                                 0)):
        with pytest.raises(ValueError, match=f'{name} must be'):
            SoftTargetVisualizationHook(**{name: value})
    checkpoint = tmp_path / 'fake.pth'
    for extra, message in (([], 'checkpoint file not found'),
                           (['--num-batches',
                             '0'], '--num-batches must be >= 1'),
                           (['--omega', '1.0'], '--omega must be in'),
                           (['--temperature',
                             '0'], '--temperature must be > 0')):
        with pytest.raises(SystemExit) as exc:
            load_script(TOOL).parse_args(
                [BAKE_CONFIG, str(checkpoint)] + extra)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
        checkpoint.write_bytes(b'')
