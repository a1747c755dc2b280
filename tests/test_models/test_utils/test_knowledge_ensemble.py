"""Tests of knowledge_ensemble against a plain float64 explicit inverse."""
import pytest
import torch
import torch.nn.functional as F

from mmbake.models import knowledge_ensemble


def reference_targets(feats, logits, omega, temperature):
    """The formula of bake.md, written the obvious way in float64."""
    feats = F.normalize(feats.double(), dim=1)
    probs = F.softmax(logits.double() / temperature, dim=1)
    num = feats.size(0)
    sim = feats @ feats.t()
    sim = sim.masked_fill(torch.eye(num, dtype=torch.bool), -1e9)
    affinity = F.softmax(sim, dim=1)
    eye = torch.eye(num, dtype=torch.float64)
    return (1 - omega) * torch.linalg.inv(eye - omega * affinity) @ probs


def random_batch(num, dim=32, classes=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(num, dim, generator=gen),
            3 * torch.randn(num, classes, generator=gen))


@pytest.mark.parametrize('num', [1, 2, 3, 17, 64, 256, 511, 512, 600])
@pytest.mark.parametrize('omega', [0.0, 0.5, 0.9])
@pytest.mark.parametrize('temperature', [1.0, 4.0])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_matches_explicit_inverse(num, omega, temperature, dtype):
    # The one solve every device runs (cholesky_solve).
    feats, logits = (t.to(dtype) for t in random_batch(num, seed=num))
    targets = knowledge_ensemble(feats, logits, omega, temperature)
    expected = reference_targets(feats, logits, omega, temperature)
    assert targets.dtype == torch.float32
    assert targets.shape == logits.shape
    torch.testing.assert_close(targets.double(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        targets.sum(1), torch.ones(num), atol=1e-5, rtol=0)


def test_matches_truncated_series():
    """Q is the limit of propagating knowledge step by step."""
    feats, logits = random_batch(12)
    omega = 0.5
    unit = F.normalize(feats.double(), dim=1)
    sim = (unit @ unit.t()).fill_diagonal_(float('-inf'))
    affinity = F.softmax(sim, dim=1)
    step = F.softmax(logits.double() / 4, dim=1)
    series = torch.zeros_like(step)
    for _ in range(60):
        series += (1 - omega) * step
        step = omega * affinity @ step
    targets = knowledge_ensemble(feats, logits, omega, 4.0)
    torch.testing.assert_close(targets.double(), series, atol=1e-6, rtol=0)


def test_edge_cases_have_defined_results():
    feats, logits = random_batch(8)
    own = F.softmax(logits / 4.0, dim=1)
    # One image: its own softened prediction.
    torch.testing.assert_close(
        knowledge_ensemble(feats[:1], logits[:1]), own[:1])
    # omega = 0: no propagation.
    torch.testing.assert_close(
        knowledge_ensemble(feats, logits, omega=0.0), own)
    # Zero-norm features: uniform affinity over the other images.
    zero = knowledge_ensemble(torch.zeros(8, 32), logits)
    assert torch.isfinite(zero).all()
    expected = reference_targets(torch.zeros(8, 32), logits, 0.5, 4.0)
    torch.testing.assert_close(zero.double(), expected, atol=1e-6, rtol=0)
    # Identical images (all of one class): all targets become the mean.
    same = knowledge_ensemble(feats[:1].repeat(8, 1), logits)
    assert torch.isfinite(same).all()
    torch.testing.assert_close(same.sum(1), torch.ones(8))


def test_extreme_finite_inputs_stay_finite():
    feats = torch.randn(64, 16) * 1e30
    logits = torch.randn(64, 5) * 1e30
    targets = knowledge_ensemble(feats, logits, omega=0.9)
    assert torch.isfinite(targets).all()
    torch.testing.assert_close(targets.sum(1), torch.ones(64))


def test_no_autograd_and_float32_under_bf16_autocast():
    feats = torch.randn(16, 8, requires_grad=True)
    logits = torch.randn(16, 4, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        targets = knowledge_ensemble(feats.bfloat16(), logits.bfloat16())
    assert targets.dtype == torch.float32
    assert not targets.requires_grad
    assert torch.isfinite(targets).all()
    expected = reference_targets(feats.detach().bfloat16().float(),
                                 logits.detach().bfloat16().float(), 0.5, 4)
    torch.testing.assert_close(targets.double(), expected, atol=1e-5, rtol=0)


def test_half_inputs_give_float32():
    feats, logits = random_batch(16)
    targets = knowledge_ensemble(feats.half(), logits.half())
    assert targets.dtype == torch.float32
    assert torch.isfinite(targets).all()


@pytest.mark.parametrize('where', ['feats', 'logits'])
@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
@pytest.mark.parametrize('num', [1, 2, 17, 256, 600])
@pytest.mark.parametrize('omega', [0.0, 0.5, 0.9])
def test_non_finite_batch_ensembles_nothing(where, bad, num, omega):
    # Every row falls back to its own softened prediction (NaN only where
    # the row's own logits are), chosen on the device (torch.where, the
    # code CUDA runs), without raising or synchronising.
    feats, logits = random_batch(num, seed=num)
    (feats if where == 'feats' else logits)[min(3, num - 1), 1] = bad
    own = F.softmax(logits.double() / 4.0, dim=1)
    torch.testing.assert_close(
        knowledge_ensemble(feats, logits, omega).double(),
        own,
        atol=1e-6,
        rtol=0,
        equal_nan=True)


@pytest.mark.parametrize('kwargs, match', [
    (dict(omega=1.0), r'omega must be a float in \[0, 1\)'),
    (dict(omega=-0.1), r'omega must be a float in \[0, 1\)'),
    (dict(temperature=0.0), 'temperature must be a float > 0'),
    (dict(ensemble_group_size=0), 'ensemble_group_size must be None or an'),
])
def test_bad_arguments(kwargs, match):
    feats, logits = random_batch(4)
    with pytest.raises(ValueError, match=match):
        knowledge_ensemble(feats, logits, **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match='same number of images'):
        knowledge_ensemble(torch.randn(4, 8), torch.randn(5, 3))
    with pytest.raises(ValueError, match='must be 2-D'):
        knowledge_ensemble(torch.randn(4, 8, 1), torch.randn(4, 3))
    with pytest.raises(ValueError, match='at least one image'):
        knowledge_ensemble(torch.randn(0, 8), torch.randn(0, 3))


def test_without_process_group_global_is_local():
    feats, logits = random_batch(10)
    torch.testing.assert_close(
        knowledge_ensemble(feats, logits, global_ensemble=True),
        knowledge_ensemble(feats, logits))
