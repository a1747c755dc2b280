"""mmpretrain's head contract for every BAKE head family."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead, DeiTClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from mmbake.models import (BAKEHead, BAKEMixin, knowledge_ensemble,
                           make_bake_head)

NUM_CLASSES, IN_CHANNELS, BATCH = 6, 12, 8


def class_aware_samples(batch=BATCH):
    """Labels laid out as a class-aware sampler does: anchor, mate, ..."""
    return [
        DataSample().set_gt_label(i // 2 % NUM_CLASSES) for i in range(batch)
    ]


def linear_feats(batch=BATCH):
    return (torch.rand(batch, IN_CHANNELS), )


def vit_feats(batch=BATCH):
    # The ViT head takes [patch_tokens, cls_token] per stage.
    return ([
        torch.rand(batch, IN_CHANNELS, 2, 2),
        torch.rand(batch, IN_CHANNELS)
    ], )


FAMILIES = {
    'linear':
    (dict(type='BAKEHead'), dict(type='LinearClsHead'), linear_feats),
    'vit': (dict(type='BAKEVisionTransformerClsHead', hidden_dim=10),
            dict(type='VisionTransformerClsHead', hidden_dim=10), vit_feats),
    'stacked': (dict(type='BAKEStackedLinearClsHead', mid_channels=[10]),
                dict(type='StackedLinearClsHead',
                     mid_channels=[10]), linear_feats),
}


def build_pair(family, **bake_args):
    """A BAKE head and its plain twin holding the same weights."""
    bake_cfg, plain_cfg, make_feats = FAMILIES[family]
    common = dict(num_classes=NUM_CLASSES, in_channels=IN_CHANNELS)
    torch.manual_seed(0)
    bake = MODELS.build(dict(bake_cfg, **common, **bake_args))
    # Random weights (the ViT head initialises its classifier to zero).
    for param in bake.parameters():
        torch.nn.init.normal_(param, std=0.5)
    plain = MODELS.build(dict(plain_cfg, **common))
    plain.load_state_dict(bake.state_dict(), strict=True)
    return bake, plain, make_feats


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_head_contract(family):
    bake, plain, make_feats = build_pair(family, global_ensemble=False)
    feats = make_feats()
    assert isinstance(bake, BAKEMixin) and isinstance(bake, type(plain))
    # Zero additional parameters: same keys, same shapes.
    assert {k: v.shape for k, v in bake.state_dict().items()} == \
        {k: v.shape for k, v in plain.state_dict().items()}
    torch.testing.assert_close(bake.pre_logits(feats), plain.pre_logits(feats))
    logits = bake(feats)
    assert logits.shape == (BATCH, NUM_CLASSES)
    torch.testing.assert_close(logits, plain(feats))
    torch.testing.assert_close(
        bake.final_layer(bake.pre_logits(feats)), logits)
    # predict is unchanged.
    for ours, theirs in zip(bake.predict(feats), plain.predict(feats)):
        torch.testing.assert_close(ours.pred_score, theirs.pred_score)
        assert ours.pred_label == theirs.pred_label
    losses = bake.loss(feats, class_aware_samples())
    assert list(losses) == ['loss_ce', 'loss_bake']
    plain_loss = plain.loss(feats, class_aware_samples())['loss']
    torch.testing.assert_close(losses['loss_ce'], plain_loss)
    # The BAKE term is T^2 KL(Q || softmax(z / T)) averaged over the batch.
    pre_logits = bake.pre_logits(feats)
    targets = knowledge_ensemble(pre_logits, logits)
    kl = (targets * (targets.log() - F.log_softmax(logits / 4, 1))).sum(1)
    torch.testing.assert_close(losses['loss_bake'], 16 * kl.mean())
    assert losses['loss_bake'] > 0


def test_checkpoint_interchange_with_linear_head(tmp_path):
    bake, _, make_feats = build_pair('linear')
    path = tmp_path / 'head.pth'
    torch.save(bake.state_dict(), path)
    plain = MODELS.build(
        dict(
            type='LinearClsHead',
            num_classes=NUM_CLASSES,
            in_channels=IN_CHANNELS))
    plain.load_state_dict(torch.load(path, weights_only=True), strict=True)
    feats = make_feats()
    torch.testing.assert_close(plain(feats), bake(feats))
    # ... and back: a LinearClsHead checkpoint fine-tunes with BAKE.
    again = BAKEHead(num_classes=NUM_CLASSES, in_channels=IN_CHANNELS)
    again.load_state_dict(plain.state_dict(), strict=True)


def test_gradient_reaches_logits_not_targets():
    head = BAKEHead(
        num_classes=NUM_CLASSES,
        in_channels=IN_CHANNELS,
        bake_weight=0.7,
        temperature=3.0,
        global_ensemble=False)
    pre_logits = torch.randn(BATCH, IN_CHANNELS, requires_grad=True)
    loss = head.loss((pre_logits, ), class_aware_samples())['loss_bake']
    loss.backward()
    # d/dz of lambda T^2 KL(Q || softmax(z/T)) / B = lambda T (p - Q) / B,
    # and the features get only what flows back through the logits: no
    # gradient through the (detached) targets.
    with torch.no_grad():
        logits = head.fc(pre_logits)
        targets = knowledge_ensemble(pre_logits, logits, temperature=3.0)
    expected = 0.7 * 3.0 * (F.softmax(logits / 3.0, 1) - targets) / BATCH
    torch.testing.assert_close(pre_logits.grad, expected @ head.fc.weight)
    torch.testing.assert_close(head.fc.bias.grad, expected.sum(0))


def test_copies_and_pickles_of_a_head_train_the_same():
    import pickle
    head = BAKEHead(
        num_classes=NUM_CLASSES,
        in_channels=IN_CHANNELS,
        global_ensemble=False)
    feats, samples = linear_feats(), class_aware_samples()
    expected = head.loss(feats, samples)['loss_bake']
    # mmengine's EMA deep-copies the model; spawn-based launchers pickle it.
    for clone in (copy.deepcopy(head), pickle.loads(pickle.dumps(head))):
        assert clone._graphs is not head._graphs and len(clone._graphs) == 0
        torch.testing.assert_close(
            clone.loss(feats, samples)['loss_bake'], expected)
    eager = BAKEHead(
        num_classes=NUM_CLASSES,
        in_channels=IN_CHANNELS,
        global_ensemble=False,
        cuda_graph=False)
    eager.load_state_dict(head.state_dict(), strict=True)
    torch.testing.assert_close(
        eager.loss(feats, samples)['loss_bake'], expected)


def test_training_step_updates_weights_through_bake_term():
    head = BAKEHead(
        num_classes=NUM_CLASSES,
        in_channels=IN_CHANNELS,
        global_ensemble=False)
    losses = head.loss(linear_feats(), class_aware_samples())
    losses['loss_bake'].backward()
    assert head.fc.weight.grad is not None
    assert head.fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('loss_cfg', [
    dict(type='CrossEntropyLoss', loss_weight=1.0),
    dict(type='LabelSmoothLoss', label_smooth_val=0.1, loss_weight=1.0),
])
def test_cross_entropy_goes_through_loss_module(loss_cfg):
    bake = BAKEHead(
        num_classes=NUM_CLASSES,
        in_channels=IN_CHANNELS,
        loss=copy.deepcopy(loss_cfg),
        global_ensemble=False)
    plain = MODELS.build(
        dict(
            type='LinearClsHead',
            num_classes=NUM_CLASSES,
            in_channels=IN_CHANNELS,
            loss=loss_cfg))
    plain.load_state_dict(bake.state_dict())
    feats = linear_feats()
    torch.testing.assert_close(
        bake.loss(feats, class_aware_samples())['loss_ce'],
        plain.loss(feats, class_aware_samples())['loss'])


def test_soft_targets_from_mixup():
    head = BAKEHead(
        num_classes=NUM_CLASSES,
        in_channels=IN_CHANNELS,
        global_ensemble=False,
        loss=dict(type='CrossEntropyLoss', use_soft=True))
    samples = class_aware_samples()
    for sample in samples:
        sample.set_gt_score(torch.softmax(torch.randn(NUM_CLASSES), 0))
    losses = head.loss(linear_feats(), samples)
    assert torch.isfinite(losses['loss_ce']) and \
        torch.isfinite(losses['loss_bake'])


def test_cal_acc_and_topk_are_kept():
    head = BAKEHead(
        num_classes=NUM_CLASSES,
        in_channels=IN_CHANNELS,
        cal_acc=True,
        topk=(1, 2),
        global_ensemble=False)
    losses = head.loss(linear_feats(), class_aware_samples())
    assert set(losses) == {
        'loss_ce', 'loss_bake', 'accuracy_top-1', 'accuracy_top-2'
    }


def test_zero_bake_weight_is_plain_training():
    head = BAKEHead(
        num_classes=NUM_CLASSES, in_channels=IN_CHANNELS, bake_weight=0.0)
    assert head.loss(linear_feats(), class_aware_samples())['loss_bake'] == 0


def test_non_finite_batch_ensembles_nothing():
    # An overflowing image: nothing is ensembled in that step, so the
    # images with finite logits get no BAKE gradient; the broken one shows
    # in loss_ce (AMP's loss scaler skips such a step).
    head = BAKEHead(
        num_classes=NUM_CLASSES,
        in_channels=IN_CHANNELS,
        global_ensemble=False)
    feats = torch.rand(BATCH, IN_CHANNELS)
    feats[2, 3] = float('inf')
    feats.requires_grad_(True)
    losses = head.loss((feats, ), class_aware_samples())
    assert not torch.isfinite(losses['loss_ce'])
    losses['loss_bake'].backward()
    finite_rows = torch.arange(BATCH) != 2
    assert torch.equal(feats.grad[finite_rows],
                       torch.zeros(BATCH - 1, IN_CHANNELS))


def test_bf16_autocast_gives_finite_losses():
    head = BAKEHead(
        num_classes=NUM_CLASSES,
        in_channels=IN_CHANNELS,
        global_ensemble=False)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = head.loss(linear_feats(), class_aware_samples())
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_bake'].dtype == torch.float32


def test_warns_when_batches_are_not_class_aware():
    head = BAKEHead(
        num_classes=NUM_CLASSES,
        in_channels=IN_CHANNELS,
        global_ensemble=False)
    shuffled = [
        DataSample().set_gt_label(i % NUM_CLASSES) for i in range(BATCH)
    ]
    with pytest.warns(UserWarning, match='ClassAwareBatchSampler'):
        head.loss(linear_feats(), shuffled)


@pytest.mark.parametrize('kwargs, match', [
    (dict(omega=1.0), r'omega must be a float in \[0, 1\), but got 1.0'),
    (dict(omega=-0.5), r'omega must be a float in \[0, 1\)'),
    (dict(temperature=0), 'temperature must be a float > 0, but got 0'),
    (dict(temperature=-1.0), 'temperature must be a float > 0'),
    (dict(bake_weight=-1.0), 'bake_weight must be a float >= 0'),
    (dict(ensemble_group_size=0), 'ensemble_group_size must be None or an'),
    (dict(cuda_graph='no'), "cuda_graph must be True or False, but got 'no'"),
    (dict(num_classes=0), 'num_classes=0 must be a positive integer'),
])
def test_bad_arguments(kwargs, match):
    cfg = dict(
        type='BAKEHead', num_classes=NUM_CLASSES, in_channels=IN_CHANNELS)
    cfg.update(kwargs)
    with pytest.raises(ValueError, match=match):
        MODELS.build(cfg)


def test_unsupported_head_families():
    with pytest.raises(ValueError, match='BAKE does not support DeiTClsHead'):
        MODELS.build(
            dict(type='BAKEDeiTClsHead', num_classes=10, in_channels=8))
    with pytest.raises(ValueError, match='distillation'):
        make_bake_head(DeiTClsHead, 'layers.head')
    with pytest.raises(ValueError, match='subclass of mmpretrain ClsHead'):
        make_bake_head(torch.nn.Linear)


def test_make_bake_head_for_a_custom_head():

    class TwoLayerHead(ClsHead):

        def __init__(self, num_classes, in_channels, **kwargs):
            super().__init__(**kwargs)
            self.hidden = torch.nn.Linear(in_channels, 8)
            self.classifier = torch.nn.Linear(8, num_classes)

        def pre_logits(self, feats):
            return torch.relu(self.hidden(feats[-1]))

        def forward(self, feats):
            return self.classifier(self.pre_logits(feats))

    bake_cls = make_bake_head(TwoLayerHead, final_layer='classifier')
    assert bake_cls.__name__ == 'BAKETwoLayerHead'
    head = bake_cls(
        num_classes=NUM_CLASSES,
        in_channels=IN_CHANNELS,
        omega=0.9,
        global_ensemble=False)
    losses = head.loss(linear_feats(), class_aware_samples())
    assert set(losses) == {'loss_ce', 'loss_bake'}
    assert head.omega == 0.9
