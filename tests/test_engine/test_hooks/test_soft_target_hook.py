"""SoftTargetVisualizationHook's arguments, and the parts of
``mmbake.visualization`` it draws with, on real batches of the small data
root. The hook in a real training run: tests/test_tools/
test_visualize_soft_targets.py."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from tests.script_utils import REPO_ROOT


def test_predict_soft_targets_on_class_aware_batches(fashion_mnist_small_root):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS, MODELS

    from mmbake.models import knowledge_ensemble
    from mmbake.visualization import (build_class_aware_batches,
                                      predict_soft_targets, soft_target_stats)

    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/bake/resnet18_1xb64_fashion-mnist.py'))
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
    plain = DATASETS.build(
        dict(
            type='FashionMNIST',
            data_root=fashion_mnist_small_root,
            split='train',
            pipeline=[dict(type='PackInputs')]))
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


def test_hook_is_registered_and_rejects_bad_arguments():
    from mmpretrain.registry import HOOKS

    from mmbake.engine import SoftTargetVisualizationHook
    assert HOOKS.get('SoftTargetVisualizationHook') is \
        SoftTargetVisualizationHook
    for name, value in (('interval', 0), ('num_batches', 0),
                        ('interval', True), ('max_images', -1), ('batch_size',
                                                                 0)):
        with pytest.raises(ValueError, match=f'{name} must be'):
            SoftTargetVisualizationHook(**{name: value})
