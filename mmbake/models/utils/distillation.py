"""The BAKE distillation term, with its gradient in closed form.

The term is ``L = w T^2 KL(Q || softmax(z / T))``, averaged over the batch,
with targets ``Q`` that carry no gradient. Its gradient with respect to the
logits is simply ``w T (softmax(z / T) - Q) / B`` (rows of ``Q`` sum to one),
so the loss and the gradient are computed together, without autograd, by
functions of tensors only; :class:`PrecomputedGradient` then hands the
gradient to autograd as one node. A head can run those functions through a
:class:`~mmbake.models.utils.cuda_graphs.CUDAGraphCache`, which launches the
whole term as one CUDA graph.
"""
from typing import Tuple

import torch
import torch.nn.functional as F

from .knowledge_ensemble import propagate, soften


def distillation_terms(targets: torch.Tensor, probs: torch.Tensor,
                       logits: torch.Tensor, check: torch.Tensor,
                       temperature: float,
                       weight: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """The weighted KL term and its gradient with respect to the logits.

    Args:
        targets (Tensor): Ensembled targets ``Q``, float32, shape (B, K).
        probs (Tensor): ``softmax(logits / T)``, float32, shape (B, K).
        logits (Tensor): The student's logits, shape (B, K), any dtype.
        check (Tensor): The scalar from :func:`propagate`, not finite when
            the ensembled batch held non-finite values: the term and its
            gradient are then zero (the step's cross-entropy is non-finite
            too, so AMP's loss scaler or the user sees it there).
        temperature (float): Distillation temperature ``T`` > 0.
        weight (float): The weight ``w`` of the term.

    Returns:
        tuple[Tensor, Tensor]: The loss (float32 scalar) and its gradient
        with respect to ``logits`` (float32, shape (B, K)); both are exactly
        zero when ``check`` or the loss is not finite.
    """
    num = logits.size(0)
    log_probs = F.log_softmax(logits.float() / temperature, dim=1)
    # KL(Q || p) = sum Q log Q - Q log p, with 0 log 0 = 0.
    kl = (torch.special.xlogy(targets, targets) - targets * log_probs).sum()
    loss = kl * (weight * temperature**2 / num)
    grad = (probs - targets).mul_(weight * temperature / num)
    ok = torch.isfinite(loss + check)
    return (torch.where(ok, loss, loss.new_zeros(())),
            torch.where(ok, grad, grad.new_zeros(())))


def local_terms(feats: torch.Tensor, logits: torch.Tensor, omega: float,
                temperature: float,
                weight: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """BAKE loss and gradient when the batch ensembles with itself only.

    Args:
        feats (Tensor): The head's ``pre_logits``, shape (B, D).
        logits (Tensor): Its logits, shape (B, K).
        omega (float): Propagation weight in [0, 1).
        temperature (float): Temperature ``T`` > 0.
        weight (float): Weight of the term.

    Returns:
        tuple[Tensor, Tensor]: See :func:`distillation_terms`.
    """
    feats, probs = soften(feats, logits, temperature)
    targets, check = propagate(feats, probs, omega)
    return distillation_terms(targets, probs, logits, check, temperature,
                              weight)


def gathered_terms(all_feats: torch.Tensor, all_probs: torch.Tensor,
                   logits: torch.Tensor, offset: int, omega: float,
                   temperature: float,
                   weight: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """BAKE loss and gradient of this rank's rows of a gathered batch.

    Args:
        all_feats (Tensor): Unit features of every rank, shape (N, D).
        all_probs (Tensor): Softened predictions of every rank, (N, K).
        logits (Tensor): This rank's logits, shape (B, K).
        offset (int): Index of this rank's first row in the gathered batch.
        omega (float): Propagation weight in [0, 1).
        temperature (float): Temperature ``T`` > 0.
        weight (float): Weight of the term.

    Returns:
        tuple[Tensor, Tensor]: See :func:`distillation_terms`.
    """
    rows = slice(offset, offset + logits.size(0))
    targets, check = propagate(all_feats, all_probs, omega)
    return distillation_terms(targets[rows], all_probs[rows], logits, check,
                              temperature, weight)


class PrecomputedGradient(torch.autograd.Function):
    """Give a loss computed without autograd its known gradient.

    ``PrecomputedGradient.apply(logits, loss, grad)`` returns ``loss`` as a
    tensor whose backward adds ``grad * upstream`` to ``logits.grad`` (cast
    to the logits' dtype, as autograd would); ``loss`` and ``grad`` receive
    no gradient.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, loss: torch.Tensor,
                grad: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad)
        ctx.logits_dtype = logits.dtype
        # Returned as is, autograd makes it a view with this node.
        return loss

    @staticmethod
    def backward(ctx, upstream: torch.Tensor):
        grad, = ctx.saved_tensors
        # Multiplied in float32 and written in the logits' dtype by one
        # kernel (autograd would otherwise add a separate cast).
        out = torch.empty_like(grad, dtype=ctx.logits_dtype)
        return torch.mul(grad, upstream, out=out), None, None
