"""Temperature scaling: the fitted T minimises the NLL; folding it into a
head's final layer divides the logits by T, for every head family."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead, LinearClsHead
from mmpretrain.registry import MODELS

from mmbake.evaluation import final_linear, fit_temperature, fold_temperature
from mmbake.models import final_layer_of, make_bake_head
from tests.test_models.test_heads.test_bake_heads import (FAMILIES,
                                                          IN_CHANNELS,
                                                          NUM_CLASSES,
                                                          build_pair)


def nll(logits, labels, temperature):
    return float(F.cross_entropy(logits.double() / temperature, labels))


def over_confident(factor, num=20000, classes=10, seed=0):
    """Labels drawn from softmax(z): calibrated logits z, scaled by factor."""
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(num, classes, generator=gen)
    labels = torch.multinomial(logits.softmax(1), 1, generator=gen)[:, 0]
    return factor * logits, labels


@pytest.mark.parametrize('factor', [0.25, 3.0])
def test_fit_recovers_a_known_scale_and_minimises_the_nll(factor):
    logits, labels = over_confident(factor)
    temperature = fit_temperature(logits, labels)
    # The calibrated logits are z itself: T is the factor, up to sampling.
    assert temperature == pytest.approx(factor, rel=0.03)
    best = nll(logits, labels, temperature)
    for step in (1e-3, 1e-2, 0.1):
        assert best <= nll(logits, labels, temperature * (1 + step))
        assert best <= nll(logits, labels, temperature * (1 - step))


def test_fit_refuses_what_has_no_finite_positive_temperature():
    labels = torch.tensor([0, 1, 2, 0])
    right = F.one_hot(labels, 3).float() * 5
    with pytest.raises(ValueError, match='every image is classified'):
        fit_temperature(right, labels)
    with pytest.raises(ValueError, match='no better than uniform'):
        fit_temperature(torch.zeros(4, 3), labels)
    with pytest.raises(ValueError, match='no better than uniform'):
        fit_temperature(-right, labels)
    with pytest.raises(ValueError, match='finite'):
        fit_temperature(torch.full((4, 3), float('nan')), labels)
    with pytest.raises(ValueError, match=r'shape \(N, K\)'):
        fit_temperature(torch.zeros(4), labels)
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\)'):
        fit_temperature(right, torch.tensor([0, 1, 2, 3]))


@pytest.mark.parametrize('family', list(FAMILIES))
def test_folding_divides_the_logits_of_every_head_family(family):
    bake, plain, make_feats = build_pair(family)
    feats = make_feats()
    for head in (bake, plain):
        before = head(feats)
        keys = {k: v.shape for k, v in head.state_dict().items()}
        linear = fold_temperature(final_layer_of(head), 0.6)
        assert linear is final_linear(final_layer_of(head))
        torch.testing.assert_close(head(feats), before / 0.6)
        assert {k: v.shape for k, v in head.state_dict().items()} == keys


def test_make_bake_head_products_fold_and_other_heads_are_refused():
    head_cls = make_bake_head(LinearClsHead)
    head = head_cls(num_classes=NUM_CLASSES, in_channels=IN_CHANNELS)
    assert final_layer_of(head) is head.fc
    # A subclass of a supported plain head may compute its logits otherwise.
    subclass = type('MyHead', (LinearClsHead, ), {})
    for other in (subclass(NUM_CLASSES, IN_CHANNELS), ClsHead(),
                  MODELS.build(
                      dict(
                          type='DeiTClsHead',
                          num_classes=NUM_CLASSES,
                          in_channels=IN_CHANNELS))):
        with pytest.raises(ValueError, match='supported: BAKEHead'):
            final_layer_of(other)
    with pytest.raises(ValueError, match='exactly one nn.Linear'):
        final_linear(
            torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)))
    for bad in (0.0, -1.0, float('inf'), float('nan')):
        with pytest.raises(ValueError, match='finite number > 0'):
            fold_temperature(head.fc, bad)
