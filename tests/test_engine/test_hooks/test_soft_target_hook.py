"""SoftTargetVisualizationHook in a tiny real training run, and its parts.

The run trains the BAKE Fashion-MNIST config for 3 epochs on the small real
data root (320 training images, batch 16) through tools/train.py, with the
hook drawing every 2 epochs: pictures must appear after epochs 2 and 3 (the
last), not after epoch 1.
"""
import copy
import os.path as osp
import sys

import pytest
import torch

REPO_ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
BAKE_CONFIG = osp.join(REPO_ROOT, 'configs', 'bake',
                       'resnet18_1xb64_fashion-mnist.py')


def _small_cfg(data_root: str):
    """The BAKE config read from the small data root, batch 16."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmbake  # noqa: F401

    cfg = Config.fromfile(BAKE_CONFIG)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    cfg.train_dataloader.batch_size = 16
    init_default_scope('mmpretrain')
    return cfg


def test_hook_draws_during_training(tmp_path, call_tool, tiny_cfg_options):
    config = tmp_path / 'bake_with_hook.py'
    # mmbake.engine is imported explicitly, so the hook is registered even
    # where the package root does not import it.
    config.write_text(
        f"_base_ = [{BAKE_CONFIG!r}]\n"
        "custom_imports = dict(imports=['mmbake', 'mmbake.engine'], "
        "allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='SoftTargetVisualizationHook', "
        "interval=2, max_images=8, batch_size=16)]\n")
    work_dir = tmp_path / 'work'
    result = call_tool([
        sys.executable, TRAIN,
        str(config), '--work-dir',
        str(work_dir), '--cfg-options', *tiny_cfg_options,
        'train_cfg.max_epochs=3', 'train_cfg.val_interval=3'
    ],
                       timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    out_dir = work_dir / 'soft_targets'
    drawn = sorted(p.name for p in out_dir.iterdir())
    assert drawn == ['epoch_2_batch0.png', 'epoch_3_batch0.png']
    log = result.stdout + result.stderr
    assert log.count('Soft-target picture ') == 2
    assert 'same_class_affinity=' in log

    import matplotlib.image as mpimg
    image = mpimg.imread(str(out_dir / 'epoch_3_batch0.png'))
    # 8 images in one row of 8 cells, each with its text block.
    assert image.shape[1] > image.shape[0] > 200
    assert image[..., :3].std() > 0.05


def test_predict_soft_targets_matches_knowledge_ensemble(
        fashion_mnist_small_root):
    from mmpretrain.registry import MODELS

    from mmbake.models import knowledge_ensemble
    from mmbake.visualization import (build_class_aware_batches,
                                      predict_soft_targets, soft_target_stats)

    cfg = _small_cfg(fashion_mnist_small_root)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    batches = build_class_aware_batches(cfg, num_batches=2, seed=3)
    assert len(batches['batches']) == 2
    assert batches['classes'][0] == 'T-shirt/top'
    batch = batches['batches'][0]
    labels = [int(s.gt_label[0]) for s in batch['data_samples']]
    # Class-aware: every anchor (even position) is followed by a mate of
    # its class, and the batch has the training batch size.
    assert len(labels) == 16
    assert labels[0::2] == labels[1::2]
    assert all(i < 320 for i in batches['indices'][0])  # training images

    bn_before = copy.deepcopy(model.backbone.bn1.running_mean)
    result = predict_soft_targets(model, batch)
    # Restored to training mode, and eval mode left BN statistics alone.
    assert model.training
    torch.testing.assert_close(model.backbone.bn1.running_mean, bn_before)

    assert result['omega'] == 0.5 and result['temperature'] == 4.0
    assert result['gt_labels'].tolist() == labels
    targets = result['targets']
    assert targets.shape == (16, 10)
    torch.testing.assert_close(targets.sum(1), torch.ones(16))

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        feats = model.extract_feat(data['inputs'])
        logits = model.head(feats)
        expected = knowledge_ensemble(model.head.pre_logits(feats), logits)
    torch.testing.assert_close(targets, expected)
    torch.testing.assert_close(result['own'], torch.softmax(logits / 4, 1))

    stats = soft_target_stats(result)
    assert set(stats) == {
        'own_top1', 'target_top1', 'own_gt_prob', 'target_gt_prob',
        'same_class_affinity'
    }
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
    unit = torch.nn.functional.normalize(feats, dim=1)
    cos01 = float(unit[0] @ unit[1])
    cos02, cos03 = float(unit[0] @ unit[2]), float(unit[0] @ unit[3])
    expected = torch.tensor([cos01, cos02, cos03]).exp()
    torch.testing.assert_close(affinity[0, 1:], expected / expected.sum())

    result = dict(
        own=torch.eye(2)[[0, 0, 1, 1]],
        targets=torch.eye(2)[[0, 1, 1, 1]],
        gt_labels=torch.tensor([0, 0, 1, 1]),
        pre_logits=feats)
    stats = soft_target_stats(result)
    assert stats['own_top1'] == 100.0 and stats['target_top1'] == 75.0
    # One same-class image among three others: share 1/3.
    assert stats['same_class_affinity'] == pytest.approx(
        3 * float(affinity[0, 1] + affinity[1, 0] + affinity[2, 3] +
                  affinity[3, 2]) / 4)
    assert stats['same_class_affinity'] > 1.0


def test_batches_use_test_pipeline(fashion_mnist_small_root):
    """No random crop or flip: a drawn image is the stored image."""
    from mmpretrain.registry import DATASETS

    from mmbake.visualization import build_class_aware_batches

    cfg = _small_cfg(fashion_mnist_small_root)
    batches = build_class_aware_batches(cfg, num_batches=1, seed=0)
    plain = DATASETS.build(
        dict(
            type='FashionMNIST',
            data_root=fashion_mnist_small_root,
            split='train',
            pipeline=[dict(type='PackInputs')]))
    for position, index in enumerate(batches['indices'][0][:6]):
        torch.testing.assert_close(batches['batches'][0]['inputs'][position],
                                   plain[index]['inputs'])


@pytest.mark.parametrize('kwargs', [
    dict(interval=0),
    dict(num_batches=0),
    dict(max_images=-1),
    dict(interval=True),
    dict(batch_size=0),
])
def test_hook_rejects_bad_arguments(kwargs):
    from mmbake.engine import SoftTargetVisualizationHook

    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        SoftTargetVisualizationHook(**kwargs)


def test_hook_is_registered():
    from mmpretrain.registry import HOOKS

    from mmbake.engine import SoftTargetVisualizationHook

    assert HOOKS.get('SoftTargetVisualizationHook') is \
        SoftTargetVisualizationHook
