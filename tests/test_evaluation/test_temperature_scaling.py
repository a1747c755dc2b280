"""Temperature scaling: the fitted T minimises the NLL; folding it into a
head's final layer divides the logits by T, for every head family."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models.heads import ClsHead, DeiTClsHead, LinearClsHead

from mmbake.evaluation import final_linear, fit_temperature, fold_temperature
from mmbake.models import final_layer_of, make_bake_head
from tests.test_models.test_heads import test_bake_heads as heads


def nll(logits, labels, temperature):
    return float(F.cross_entropy(logits.double() / temperature, labels))


@pytest.mark.parametrize('factor', [0.25, 3.0])
def test_fit_recovers_a_known_scale_and_minimises_the_nll(factor):
    # Labels drawn from softmax(z): z is calibrated, so T is the factor of
    # factor * z, up to sampling.
    gen = torch.Generator().manual_seed(0)
    calibrated = 2.0 * torch.randn(20000, 10, generator=gen)
    labels = torch.multinomial(calibrated.softmax(1), 1, generator=gen)[:, 0]
    logits = factor * calibrated
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(factor, rel=0.03)
    best = nll(logits, labels, temperature)
    for step in (1e-3, 1e-2, 0.1):
        assert best <= nll(logits, labels, temperature * (1 + step))
        assert best <= nll(logits, labels, temperature * (1 - step))


LABELS = torch.tensor([0, 1, 2, 0])
RIGHT = F.one_hot(LABELS, 3).float() * 5


@pytest.mark.parametrize('logits, labels, match', [
    (RIGHT, LABELS, 'every image is classified'),
    (torch.zeros(4, 3), LABELS, 'no better than uniform'),
    (-RIGHT, LABELS, 'no better than uniform'),
    (torch.full((4, 3), float('nan')), LABELS, 'finite'),
    (torch.zeros(4), LABELS, r'shape \(N, K\)'),
    (RIGHT, torch.tensor([0, 1, 2, 3]), r'labels must lie in \[0, 3\)'),
])
def test_fit_refuses_what_has_no_finite_positive_temperature(
        logits, labels, match):
    with pytest.raises(ValueError, match=match):
        fit_temperature(logits, labels)


@pytest.mark.parametrize('family', list(heads.FAMILIES))
def test_folding_divides_the_logits_of_every_head_family(family):
    bake, plain, make_feats = heads.build_pair(family)
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
    head = head_cls(num_classes=6, in_channels=12)
    assert final_layer_of(head) is head.fc
    # A subclass of a supported plain head may compute its logits otherwise.
    subclass = type('MyHead', (LinearClsHead, ), {})
    for other in (subclass(6, 12), ClsHead(), DeiTClsHead(6, 12)):
        with pytest.raises(ValueError, match='supported: BAKEHead'):
            final_layer_of(other)
    with pytest.raises(ValueError, match='exactly one nn.Linear'):
        final_linear(
            torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)))
    for bad in (0.0, -1.0, float('inf'), float('nan')):
        with pytest.raises(ValueError, match='finite number > 0'):
            fold_temperature(head.fc, bad)
