"""mmpretrain's head contract for every BAKE head family."""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead, DeiTClsHead, LinearClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from mmbake.models import (BAKEHead, BAKEMixin, knowledge_ensemble,
                           make_bake_head)

NUM_CLASSES, IN_CHANNELS, BATCH = 6, 12, 8


def class_aware_samples():
    """Labels laid out as a class-aware sampler does: anchor, mate, ..."""
    return [
        DataSample().set_gt_label(i // 2 % NUM_CLASSES) for i in range(BATCH)
    ]


def linear_feats():
    return (torch.rand(BATCH, IN_CHANNELS), )


def vit_feats():  # [patch_tokens, cls_token] per stage
    return ([torch.rand(BATCH, IN_CHANNELS, 2, 2), linear_feats()[0]], )


FAMILIES = {  # the plain head, its arguments, its features
    'linear': ('LinearClsHead', {}, linear_feats),
    'vit': ('VisionTransformerClsHead', dict(hidden_dim=10), vit_feats),
    'stacked': ('StackedLinearClsHead', dict(mid_channels=[10]), linear_feats),
}


def build_pair(family):
    """A BAKE head and its plain twin holding the same weights."""
    plain_type, args, make_feats = FAMILIES[family]
    args = dict(args, num_classes=NUM_CLASSES, in_channels=IN_CHANNELS)
    bake_type = 'BAKEHead' if family == 'linear' else 'BAKE' + plain_type
    torch.manual_seed(0)
    bake = MODELS.build(dict(args, type=bake_type))
    # Random weights (the ViT head initialises its classifier to zero).
    for param in bake.parameters():
        torch.nn.init.normal_(param, std=0.5)
    plain = MODELS.build(dict(args, type=plain_type))
    # Zero additional parameters: checkpoints load both ways, strictly
    # (same keys, same shapes).
    plain.load_state_dict(bake.state_dict(), strict=True)
    bake.load_state_dict(plain.state_dict(), strict=True)
    return bake, plain, make_feats


def head(**kwargs):
    return BAKEHead(num_classes=NUM_CLASSES, in_channels=IN_CHANNELS, **kwargs)


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_head_contract(family):
    bake, plain, make_feats = build_pair(family)
    feats = make_feats()
    assert isinstance(bake, BAKEMixin) and isinstance(bake, type(plain))
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
    targets = knowledge_ensemble(bake.pre_logits(feats), logits)
    kl = (targets * (targets.log() - F.log_softmax(logits / 4, 1))).sum(1)
    torch.testing.assert_close(losses['loss_bake'], 16 * kl.mean())
    assert losses['loss_bake'] > 0


def test_gradient_reaches_logits_not_targets():
    bake = head(bake_weight=0.7, temperature=3.0)
    pre_logits = torch.randn(BATCH, IN_CHANNELS, requires_grad=True)
    bake.loss((pre_logits, ), class_aware_samples())['loss_bake'].backward()
    # d/dz of lambda T^2 KL(Q || softmax(z/T)) / B = lambda T (p - Q) / B,
    # and the features get only what flows back through the logits: no
    # gradient through the (detached) targets.
    with torch.no_grad():
        logits = bake.fc(pre_logits)
        targets = knowledge_ensemble(pre_logits, logits, temperature=3.0)
    expected = 0.7 * 3.0 * (F.softmax(logits / 3.0, 1) - targets) / BATCH
    torch.testing.assert_close(pre_logits.grad, expected @ bake.fc.weight)
    torch.testing.assert_close(bake.fc.weight.grad, expected.t() @ pre_logits)
    torch.testing.assert_close(bake.fc.bias.grad, expected.sum(0))


def test_copies_and_pickles_of_a_head_train_the_same():
    bake = head()
    feats, samples = linear_feats(), class_aware_samples()
    expected = bake.loss(feats, samples)['loss_bake']
    # mmengine's EMA deep-copies the model; spawn-based launchers pickle it.
    for clone in (copy.deepcopy(bake), pickle.loads(pickle.dumps(bake))):
        assert clone._graphs is not bake._graphs and len(clone._graphs) == 0
        torch.testing.assert_close(
            clone.loss(feats, samples)['loss_bake'], expected)


def test_cross_entropy_goes_through_loss_module():
    # loss_ce is the configured loss (the contract test: the default CE);
    # cal_acc and topk are the head's: its accuracies are logged too.
    loss = dict(type='LabelSmoothLoss', label_smooth_val=0.1, loss_weight=1.0)
    bake = head(loss=copy.deepcopy(loss), cal_acc=True, topk=(1, 2))
    plain = LinearClsHead(NUM_CLASSES, IN_CHANNELS, loss=loss)
    plain.load_state_dict(bake.state_dict())
    feats = linear_feats()
    losses = bake.loss(feats, class_aware_samples())
    torch.testing.assert_close(
        losses['loss_ce'],
        plain.loss(feats, class_aware_samples())['loss'])
    assert set(losses) == {
        'loss_ce', 'loss_bake', 'accuracy_top-1', 'accuracy_top-2'
    }


def test_soft_targets_from_mixup_and_zero_bake_weight():
    samples = class_aware_samples()
    for sample in samples:
        sample.set_gt_score(torch.softmax(torch.randn(NUM_CLASSES), 0))
    losses = head(loss=dict(type='CrossEntropyLoss', use_soft=True)).loss(
        linear_feats(), samples)
    assert all(torch.isfinite(v) for v in losses.values())
    # bake_weight=0 is plain training.
    assert head(bake_weight=0.0).loss(linear_feats(),
                                      samples)['loss_bake'] == 0


def test_non_finite_batch_ensembles_nothing():
    # An overflowing image: nothing is ensembled in that step, so the
    # images with finite logits get no BAKE gradient; the broken one shows
    # in loss_ce (AMP's loss scaler skips such a step).
    feats = torch.rand(BATCH, IN_CHANNELS)
    feats[2, 3] = float('inf')
    feats.requires_grad_(True)
    losses = head().loss((feats, ), class_aware_samples())
    assert not torch.isfinite(losses['loss_ce'])
    losses['loss_bake'].backward()
    finite_rows = torch.arange(BATCH) != 2
    assert torch.equal(feats.grad[finite_rows],
                       torch.zeros(BATCH - 1, IN_CHANNELS))


def test_bf16_autocast_gives_finite_losses():
    feats = torch.rand(BATCH, IN_CHANNELS, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = head().loss((feats, ), class_aware_samples())
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_bake'].dtype == torch.float32
    sum(losses.values()).backward()
    assert torch.isfinite(feats.grad).all()


def test_warns_when_batches_are_not_class_aware():
    shuffled = [
        DataSample().set_gt_label(i % NUM_CLASSES) for i in range(BATCH)
    ]
    with pytest.warns(UserWarning, match='ClassAwareBatchSampler'):
        head().loss(linear_feats(), shuffled)


@pytest.mark.parametrize('kwargs, match', [
    (dict(omega=-0.5), r'omega must be a float in \[0, 1\), but got -0.5'),
    (dict(temperature=0), 'temperature must be a float > 0, but got 0'),
    (dict(bake_weight=-1.0), 'bake_weight must be a float >= 0'),
    (dict(ensemble_group_size=0), 'ensemble_group_size must be None or an'),
    (dict(cuda_graph='no'), "cuda_graph must be True or False, but got 'no'"),
    (dict(num_classes=0), 'num_classes=0 must be a positive integer'),
])
def test_bad_arguments(kwargs, match):
    cfg = dict(
        type='BAKEHead', num_classes=NUM_CLASSES, in_channels=IN_CHANNELS)
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(cfg, **kwargs))


def test_make_bake_head_for_a_custom_head_not_for_unsupported_ones():

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
    bake = bake_cls(
        num_classes=NUM_CLASSES, in_channels=IN_CHANNELS, omega=0.9)
    losses = bake.loss(linear_feats(), class_aware_samples())
    assert set(losses) == {'loss_ce', 'loss_bake'} and bake.omega == 0.9
    with pytest.raises(ValueError, match='BAKE does not support DeiTClsHead'):
        MODELS.build(
            dict(type='BAKEDeiTClsHead', num_classes=10, in_channels=8))
    with pytest.raises(ValueError, match='distillation'):
        make_bake_head(DeiTClsHead, 'layers.head')
    with pytest.raises(ValueError, match='subclass of mmpretrain ClsHead'):
        make_bake_head(torch.nn.Linear)
