"""knowledge_ensemble against a plain float64 explicit inverse, and
distillation_kl's closed-form value and gradient against autograd's."""
import pytest
import torch
import torch.nn.functional as F

from mmbake.models import EnsembleGroup, distillation_kl, knowledge_ensemble


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


def close(got, expected, **kwargs):
    torch.testing.assert_close(
        got.double(), expected, atol=1e-6, rtol=0, **kwargs)


def random_batch(num, dim=32, classes=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(num, dim, generator=gen),
            3 * torch.randn(num, classes, generator=gen))


@pytest.mark.parametrize('num', [1, 2, 3, 17, 64, 600])
@pytest.mark.parametrize('omega', [0.0, 0.5, 0.9])
@pytest.mark.parametrize('temperature', [1.0, 4.0])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.half])
def test_matches_explicit_inverse(num, omega, temperature, dtype):
    # The one solve every device runs (cholesky_solve); float32 out.
    feats, logits = (t.to(dtype) for t in random_batch(num, seed=num))
    targets = knowledge_ensemble(feats, logits, omega, temperature)
    expected = reference_targets(feats, logits, omega, temperature)
    assert targets.dtype == torch.float32 and targets.shape == logits.shape
    close(targets, expected)
    torch.testing.assert_close(
        targets.sum(1), torch.ones(num), atol=1e-5, rtol=0)


def test_edge_cases_have_defined_results():
    feats, logits = random_batch(8)
    # Zero-norm features: uniform affinity over the other images.
    zero = knowledge_ensemble(torch.zeros(8, 32), logits)
    expected = reference_targets(torch.zeros(8, 32), logits, 0.5, 4.0)
    close(zero, expected)
    # Identical images (all of one class), extreme finite inputs: finite.
    for feats, logits in ((feats[:1].repeat(8, 1),
                           logits), (torch.randn(64, 16) * 1e30,
                                     torch.randn(64, 5) * 1e30)):
        targets = knowledge_ensemble(feats, logits, omega=0.9)
        assert torch.isfinite(targets).all()
        torch.testing.assert_close(targets.sum(1), torch.ones(len(feats)))
    # Without a process group, global_ensemble is the local computation.
    torch.testing.assert_close(
        knowledge_ensemble(feats, logits, global_ensemble=True),
        knowledge_ensemble(feats, logits))


def test_no_autograd_and_float32_under_bf16_autocast():
    feats = torch.randn(16, 8, requires_grad=True)
    logits = torch.randn(16, 4, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        targets = knowledge_ensemble(feats.bfloat16(), logits.bfloat16())
        loss = distillation_kl(logits.bfloat16(), targets, 4.0)
    assert targets.dtype == loss.dtype == torch.float32
    assert not targets.requires_grad
    expected = reference_targets(feats.detach().bfloat16().float(),
                                 logits.detach().bfloat16().float(), 0.5, 4)
    torch.testing.assert_close(targets.double(), expected, atol=1e-5, rtol=0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


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
    close(knowledge_ensemble(feats, logits, omega), own, equal_nan=True)


@pytest.mark.parametrize('feats, logits, kwargs, match', [
    ((4, 8), (4, 3), dict(omega=1.0), r'omega must be a float in \[0, 1\)'),
    ((4, 8), (4, 3), dict(temperature=0.0), 'temperature must be a float >'),
    ((4, 8), (4, 3), dict(ensemble_group_size=0), 'ensemble_group_size must'),
    ((4, 8),
     (4, 3), dict(ensemble_group=EnsembleGroup(), ensemble_group_size=2),
     'ensemble_group_size must be None with ensemble_group'),
    ((4, 8), (5, 3), {}, 'same number of images'),
    ((0, 8), (0, 3), {}, 'at least one image'),
    ((4, 8, 1), (4, 3), {}, 'must be 2-D'),
])
def test_bad_arguments(feats, logits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        knowledge_ensemble(torch.randn(feats), torch.randn(logits), **kwargs)


def bake_term(feats, logits, omega, temperature, weight, closed_form):
    """The BAKE term and its logit gradient, as BAKEHead.loss builds it."""
    logits = logits.clone().requires_grad_(True)
    targets = knowledge_ensemble(feats, logits, omega, temperature)
    if closed_form:
        kl = distillation_kl(logits, targets, temperature)
    else:  # the formula as it reads, differentiated by autograd
        kl = F.kl_div(
            F.log_softmax(logits / temperature, dim=1),
            targets,
            reduction='batchmean')
    loss = weight * temperature**2 * kl
    loss.backward()
    return loss.detach(), logits.grad


@pytest.mark.parametrize('num', [1, 2, 7, 64])
@pytest.mark.parametrize('omega, temperature, weight', [(0.5, 4.0, 1.0),
                                                        (0.9, 1.0, 0.3),
                                                        (0.0, 2.0, 2.0)])
def test_kl_and_gradient_equal_autograd(num, omega, temperature, weight):
    feats, logits = random_batch(num, 24, 9, seed=num)
    loss, grad = bake_term(feats, logits, omega, temperature, weight, True)
    ref_loss, ref_grad = bake_term(feats, logits, omega, temperature, weight,
                                   False)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-4)


def test_kl_gradient_is_upstream_times_grad_in_logits_dtype():
    feats, logits = random_batch(8)
    logits = logits.bfloat16().requires_grad_(True)
    targets = knowledge_ensemble(feats, logits)
    (3.0 * distillation_kl(logits, targets, 4.0)).backward()
    assert logits.grad.dtype == torch.bfloat16
    expected = (F.softmax(logits.detach().float() / 4, 1) - targets) / 32
    torch.testing.assert_close(logits.grad, (3.0 * expected).bfloat16())
