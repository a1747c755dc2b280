"""The closed-form BAKE loss and gradient against autograd's."""
import pytest
import torch
import torch.nn.functional as F

from mmbake.models import knowledge_ensemble
from mmbake.models.utils import (PrecomputedGradient, gathered_terms,
                                 local_terms, soften)


def random_batch(num, dim=24, classes=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(num, dim, generator=gen),
            3 * torch.randn(num, classes, generator=gen))


def autograd_reference(feats, logits, omega, temperature, weight):
    """The term as the formula reads, differentiated by autograd."""
    logits = logits.clone().requires_grad_(True)
    targets = knowledge_ensemble(feats, logits, omega, temperature)
    log_student = F.log_softmax(logits / temperature, dim=1)
    loss = weight * temperature**2 * F.kl_div(
        log_student, targets, reduction='batchmean')
    loss.backward()
    return loss.detach(), logits.grad


def closed_form(feats, logits, omega, temperature, weight):
    """local_terms + PrecomputedGradient, as BAKEMixin uses them."""
    logits = logits.clone().requires_grad_(True)
    loss, grad = local_terms(feats, logits.detach(), omega, temperature,
                             weight)
    loss = PrecomputedGradient.apply(logits, loss, grad)
    assert loss.requires_grad and loss.dtype == torch.float32
    loss.backward()
    return loss.detach(), logits.grad


@pytest.mark.parametrize('num', [1, 2, 7, 64])
@pytest.mark.parametrize('omega, temperature, weight',
                         [(0.5, 4.0, 1.0), (0.9, 1.0, 0.3), (0.0, 2.0, 2.0)])
def test_loss_and_gradient_equal_autograd(num, omega, temperature, weight):
    feats, logits = random_batch(num, seed=num)
    loss, grad = closed_form(feats, logits, omega, temperature, weight)
    ref_loss, ref_grad = autograd_reference(feats, logits, omega,
                                            temperature, weight)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-4)


def test_gradient_is_upstream_times_grad_in_logits_dtype():
    feats, logits = random_batch(8)
    logits = logits.bfloat16().requires_grad_(True)
    loss, grad = local_terms(feats, logits.detach(), 0.5, 4.0, 1.0)
    out = PrecomputedGradient.apply(logits, loss, grad)
    (3.0 * out).backward()
    assert logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(logits.grad, (3.0 * grad).bfloat16())
    # The loss and gradient computed without autograd get no gradient.
    assert not loss.requires_grad and not grad.requires_grad


def test_gathered_rows_equal_local_computation_over_the_batch():
    feats, logits = random_batch(10)
    full_loss, full_grad = local_terms(feats, logits, 0.5, 4.0, 1.0)
    all_feats, all_probs = soften(feats, logits, 4.0)
    rows = slice(3, 7)
    loss, grad = gathered_terms(all_feats, all_probs, logits[rows], 3, 0.5,
                                4.0, 1.0)
    # Same targets for the rows; the loss averages over this rank's rows.
    targets = knowledge_ensemble(feats, logits)[rows]
    log_student = F.log_softmax(logits[rows] / 4.0, dim=1)
    expected = 16.0 * F.kl_div(log_student, targets, reduction='batchmean')
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad * 4, full_grad[rows] * 10)


@pytest.mark.parametrize('where', ['feats', 'logits'])
@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_batch_gives_zero_loss_and_gradient(where, bad):
    feats, logits = random_batch(8)
    (feats if where == 'feats' else logits)[2, 1] = bad
    loss, grad = local_terms(feats, logits, 0.5, 4.0, 1.0)
    assert loss.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(grad))


def test_bf16_autocast_gives_float32_terms():
    feats, logits = random_batch(16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss, grad = local_terms(feats.bfloat16(), logits.bfloat16(), 0.5,
                                 4.0, 1.0)
    assert loss.dtype == grad.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
