"""Batch knowledge ensembling: BAKE's soft targets and distillation loss."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .batch_gather import (EnsembleGroup, ensemble_world_size,
                           gather_ensemble_batch)
from .cuda_graphs import CUDAGraphs, run_graphed, with_gradient


def check_bake_args(omega: float,
                    temperature: float,
                    bake_weight: float = 1.0,
                    cuda_graph: bool = True) -> None:
    """Raise a ValueError naming the first BAKE argument out of range."""
    for name, value, ok, allowed in (
        ('omega', omega, lambda: 0 <= omega < 1, 'a float in [0, 1)'),
        ('temperature', temperature, lambda: temperature > 0, 'a float > 0'),
        ('bake_weight', bake_weight, lambda: bake_weight >= 0, 'a float >= 0'),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not ok():
            raise ValueError(f'{name} must be {allowed}, but got {value!r}.')
    if not isinstance(cuda_graph, bool):
        raise ValueError('cuda_graph must be True or False, but got '
                         f'{cuda_graph!r}.')


def _soften(feats: torch.Tensor, logits: torch.Tensor,
            temperature: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Unit float32 features and ``P = softmax(logits / T)``."""
    feats = feats.float()
    # F.normalize without its expand_as: the same numbers, one kernel fewer.
    feats = feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return feats, F.softmax(logits.float() / temperature, dim=1)


def _propagate(feats: torch.Tensor, probs: torch.Tensor, omega: float,
               start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of ``Q`` for unit ``feats`` and ``P = probs``."""
    own = probs[start:stop]
    if feats.size(0) == 1 or omega == 0.0:
        return own.clone()  # Q = P: one image has no mate to learn from
    with torch.autocast(feats.device.type, enabled=False):
        # Zero rows (a gathered rank's padding; a row of P sums to one) get
        # zero rows and columns in E and a one on the diagonal: the system
        # stays SPD and block-diagonal, the other rows' solution unchanged.
        valid = (probs.sum(dim=1) > 0.5).float()
        # Cosines lie in [-1, 1]: exp() cannot overflow, so the row softmax
        # needs no max-shift, which keeps E exactly symmetric.
        system = torch.exp(feats @ feats.t()) * valid * valid[:, None]
        system.fill_diagonal_(0.0)
        degree = system.sum(dim=1)
        system.mul_(-omega).diagonal().add_(degree + (1.0 - valid))
        # Positive definite for w < 1: the unchecked factorisation cannot
        # fail and needs no host synchronisation.
        chol, _ = torch.linalg.cholesky_ex(system)
        scaled = probs * (degree * (1.0 - omega)).unsqueeze(1)
        targets = torch.cholesky_solve(scaled, chol)[start:stop]
    # A non-finite feature makes every degree NaN, a non-finite prediction
    # the sum of P. Chosen on the device: no host synchronisation.
    finite = torch.isfinite(probs.sum() + degree.sum())
    return torch.where(finite, targets, own)


def _local_targets(feats: torch.Tensor, logits: torch.Tensor, omega: float,
                   temperature: float) -> torch.Tensor:
    return _propagate(*_soften(feats, logits, temperature), omega, 0,
                      feats.size(0))


@torch.no_grad()
def knowledge_ensemble(
        feats: torch.Tensor,
        logits: torch.Tensor,
        omega: float = 0.5,
        temperature: float = 4.0,
        global_ensemble: bool = False,
        ensemble_group_size: Optional[int] = None,
        cuda_graphs: Optional[CUDAGraphs] = None,
        ensemble_group: Optional[EnsembleGroup] = None) -> torch.Tensor:
    """The BAKE targets ``Q = (1 - w) (I - w A)^-1 softmax(logits / T)``.

    ``A`` is the row softmax of the cosine similarities ``f_i . f_j`` over
    ``j != i`` (no temperature). With ``E = exp(f f^T)`` (zero diagonal) and
    ``d = E 1``, ``I - w A = D^-1 (D - w E)``, and ``D - w E`` is symmetric
    and strictly diagonally dominant, so one Cholesky factorisation (B^3 / 3
    flops; an explicit inverse takes 2 B^3) gives ``Q = (D - w E)^-1 (1 - w)
    D P`` exactly. Float32, autocast off, no autograd; rows sum to one. A
    non-finite value in the ensembled batch gives every row (every rank) its
    own ``softmax(logits / T)``, without a host synchronisation.

    Args:
        feats (Tensor): Features, shape (B, D): the head's ``pre_logits``.
        logits (Tensor): Logits, shape (B, K).
        omega (float): Propagation weight ``w`` in [0, 1). Defaults to 0.5.
        temperature (float): Softmax temperature ``T`` > 0. Defaults to 4.0.
        global_ensemble (bool): In a process group, ensemble over the
            gathered batches of all ranks (sizes may differ) and return this
            rank's rows. Defaults to False.
        ensemble_group_size (int, optional): Ensemble within consecutive
            groups of this many ranks; None for all. Defaults to None.
        cuda_graphs (CUDAGraphs, optional): Replay the parts on either side
            of the gather from these CUDA graphs (the same numbers); None
            runs eagerly. Defaults to None.
        ensemble_group (EnsembleGroup, optional): In place of
            ``ensemble_group_size``, kept between calls (as the heads do):
            see :func:`gather_ensemble_batch`. Defaults to None.

    Returns:
        Tensor: Float32 targets for this rank's rows, shape (B, K).
    """
    check_bake_args(omega, temperature)
    if feats.dim() != 2 or logits.dim() != 2 or \
            feats.size(0) != logits.size(0) or feats.size(0) == 0:
        raise ValueError(
            'feats and logits must be 2-D, hold the same number of images '
            f'and at least one image, but got shapes {tuple(feats.shape)} '
            f'and {tuple(logits.shape)}.')
    if ensemble_group is not None and ensemble_group_size is not None:
        raise ValueError(
            'ensemble_group_size must be None with ensemble_group')
    group = ensemble_group or EnsembleGroup(ensemble_group_size)
    omega, temperature = float(omega), float(temperature)
    if not (global_ensemble and ensemble_world_size(group.group_size) > 1):
        return run_graphed(cuda_graphs, _local_targets, feats, logits, omega,
                           temperature)
    # Collectives stay outside the graphs.
    feats, probs = run_graphed(cuda_graphs, _soften, feats, logits,
                               temperature)
    feats, probs, start = gather_ensemble_batch(feats, probs, group)
    return run_graphed(cuda_graphs, _propagate, feats, probs, omega, start,
                       start + logits.size(0))


def _kl_and_gradient(logits: torch.Tensor, targets: torch.Tensor,
                     temperature: float) -> Tuple[torch.Tensor, torch.Tensor]:
    z, num = logits.float() / temperature, logits.size(0)
    # KL(Q || p) = sum Q log Q - Q log p (0 log 0 = 0). Q has no gradient
    # and rows summing to one, so d KL / dz = (p - Q) / (T B).
    kl = torch.special.xlogy(targets, targets) - targets * z.log_softmax(1)
    return kl.sum() / num, (z.softmax(1) - targets).div_(temperature * num)


def distillation_kl(logits: torch.Tensor,
                    targets: torch.Tensor,
                    temperature: float,
                    cuda_graphs: Optional[CUDAGraphs] = None) -> torch.Tensor:
    """``KL(Q || softmax(logits / T))``, summed over classes, batch mean.

    Float32, differentiable in ``logits`` only (its gradient is computed
    with it, so that a graph can replay the whole term).

    Args:
        logits (Tensor): The student's logits, shape (B, K).
        targets (Tensor): Targets ``Q`` without gradient, shape (B, K).
        temperature (float): Temperature ``T`` > 0.
        cuda_graphs (CUDAGraphs, optional): As in
            :func:`knowledge_ensemble`. Defaults to None.

    Returns:
        Tensor: A scalar.
    """
    value, grad = run_graphed(cuda_graphs, _kl_and_gradient, logits.detach(),
                              targets, float(temperature))
    return with_gradient(value, logits, grad)
