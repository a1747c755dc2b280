"""distillation_kl: the closed-form value and gradient against autograd's."""
import pytest
import torch
import torch.nn.functional as F

from mmbake.models import distillation_kl, knowledge_ensemble


def random_batch(num, dim=24, classes=9, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(num, dim, generator=gen),
            3 * torch.randn(num, classes, generator=gen))


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
def test_loss_and_gradient_equal_autograd(num, omega, temperature, weight):
    feats, logits = random_batch(num, seed=num)
    loss, grad = bake_term(feats, logits, omega, temperature, weight, True)
    ref_loss, ref_grad = bake_term(feats, logits, omega, temperature, weight,
                                   False)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-4)


def test_gradient_is_upstream_times_grad_in_logits_dtype():
    feats, logits = random_batch(8)
    logits = logits.bfloat16().requires_grad_(True)
    targets = knowledge_ensemble(feats, logits)
    out = distillation_kl(logits, targets, 4.0)
    (3.0 * out).backward()
    assert logits.grad.dtype == torch.bfloat16
    expected = (F.softmax(logits.detach().float() / 4, 1) - targets) / 32
    torch.testing.assert_close(logits.grad, (3.0 * expected).bfloat16())
    # The targets receive no gradient.
    assert not targets.requires_grad


def test_bf16_autocast_gives_float32_loss():
    feats, logits = random_batch(16)
    logits.requires_grad_(True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        targets = knowledge_ensemble(feats.bfloat16(), logits.bfloat16())
        loss = distillation_kl(logits.bfloat16(), targets, 4.0)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()


def test_nothing_ensembled_means_zero_gradient():
    # Non-finite values elsewhere in the batch: Q = softmax(z / T) for
    # every row, so a row with finite logits gets no BAKE gradient.
    feats, logits = random_batch(8)
    feats[2, 1] = float('nan')
    logits.requires_grad_(True)
    targets = knowledge_ensemble(feats, logits)
    distillation_kl(logits, targets, 4.0).backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
