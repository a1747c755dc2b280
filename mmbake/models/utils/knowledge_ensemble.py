"""Batch knowledge ensembling: the soft targets of BAKE."""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .batch_gather import gather_ensemble_batch


def _check_args(feats: torch.Tensor, logits: torch.Tensor, omega: float,
                temperature: float) -> None:
    """Validate the inputs of :func:`knowledge_ensemble`."""
    if not 0.0 <= omega < 1.0:
        raise ValueError(f'omega must be in [0, 1), but got {omega}.')
    if not temperature > 0.0:
        raise ValueError(
            f'temperature must be > 0, but got {temperature}.')
    if feats.dim() != 2 or logits.dim() != 2:
        raise ValueError(
            'feats and logits must be 2-D (batch, channels), but got shapes '
            f'{tuple(feats.shape)} and {tuple(logits.shape)}.')
    if feats.size(0) != logits.size(0):
        raise ValueError(
            'feats and logits must hold the same number of images, but got '
            f'{feats.size(0)} and {logits.size(0)}.')
    if feats.size(0) == 0:
        raise ValueError('knowledge_ensemble needs at least one image.')


# Batch size from which the CPU path uses triangular solves (see _solve).
_CPU_SOLVE_MIN_BATCH = 512


def soften(feats: torch.Tensor, logits: torch.Tensor,
           temperature: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Unit-length features and softened predictions, float32, detached.

    Args:
        feats (Tensor): Features, shape (B, D), any floating dtype. Zero
            rows stay zero.
        logits (Tensor): Logits, shape (B, K), any floating dtype.
        temperature (float): Softmax temperature ``T`` > 0.

    Returns:
        tuple[Tensor, Tensor]: ``feats / |feats|`` and
        ``softmax(logits / T)``, both float32 and without autograd history.
    """
    feats = feats.detach().float()
    # F.normalize without its expand_as: the same numbers, one op fewer.
    feats = feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-12)
    probs = F.softmax(logits.detach().float() / temperature, dim=1)
    return feats, probs


def propagate(feats: torch.Tensor, probs: torch.Tensor,
              omega: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Apply the closed-form BAKE propagation to a whole batch.

    With unit features ``f``, ``E = exp(f f^T)`` with a zero diagonal and
    ``d = E 1``, the affinity is ``A = D^-1 E`` (a row softmax of the cosine
    similarities with the diagonal masked out) and the targets are
    ``Q = (1 - w) (I - w A)^-1 P``. Since ``I - w A = D^-1 (D - w E)`` and
    ``D - w E`` is symmetric and strictly diagonally dominant with a
    positive diagonal, it is positive definite, so ``Q`` is obtained exactly
    from one Cholesky factorisation (about B^3 / 3 flops), which is cheaper
    than an LU solve (2 B^3 / 3) or an explicit inverse (2 B^3). The factor
    is applied by triangular solves on CUDA and for large CPU batches, and
    as its inverse times ``P`` for small CPU batches, whichever measured
    faster. Autocast is off inside: everything is float32.

    Args:
        feats (Tensor): Unit-length float32 features, shape (B, D).
        probs (Tensor): Softened float32 predictions, shape (B, K).
        omega (float): The propagation weight ``w`` in [0, 1).

    Returns:
        tuple[Tensor, Tensor]: The ensembled targets ``Q`` (float32, shape
        (B, K)), and ``check``, a float32 scalar that is finite exactly when
        ``feats`` and ``probs`` were (then ``Q`` is finite too); adding it
        to another scalar before one ``isfinite`` tests both. Nothing here
        synchronises with the device.
    """
    if feats.size(0) == 1 or omega == 0.0:
        # One image has no mate to learn from: its target is its own
        # softened prediction (what the reference's finite mask yields).
        return probs.clone(), probs.sum()
    if not _autocast_enabled(feats.device.type):
        return _solve(feats, probs, omega)
    with torch.autocast(device_type=feats.device.type, enabled=False):
        return _solve(feats, probs, omega)


def _autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for this device type (True if unknown)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return True


def _solve(feats: torch.Tensor, probs: torch.Tensor,
           omega: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`propagate` for B > 1 and omega > 0, autocast off."""
    # Cosine similarities lie in [-1, 1], so exp() cannot overflow and the
    # row softmax needs no max-shift; that keeps E exactly symmetric.
    sim = torch.exp(feats @ feats.t())
    sim.fill_diagonal_(0.0)
    degree = sim.sum(dim=1)
    # Q = (D - w E)^-1 diag(scale) P with scale = (1 - w) d.
    scale = degree * (1.0 - omega)
    system = sim.mul_(-omega)
    system.diagonal().add_(degree)
    # Positive definite with a diagonal margin of at least (1 - w) (B - 1) /
    # e, so the factorisation cannot fail for w < 1; the unchecked variant
    # avoids a host synchronisation on CUDA.
    chol, _ = torch.linalg.cholesky_ex(system)
    # The finite check: a non-finite feature row makes every degree NaN
    # (through its column of E), a non-finite prediction row makes its row
    # of P, and so its sum, NaN.
    if not system.is_cuda and feats.size(0) < _CPU_SOLVE_MIN_BATCH:
        # On the CPU, triangular solves with K = probs.size(1) right-hand
        # sides are slower than one matrix product for small systems
        # (measured, docs/benchmarks.md): form the inverse from the same
        # factor (still exact), scale its columns (B x B) rather than the
        # rows of P (B x K), and multiply.
        inverse = torch.cholesky_inverse(chol).mul_(scale)
        return inverse @ probs, probs.sum() + scale.sum()
    rhs = probs * scale.unsqueeze(1)
    check = rhs.sum()
    if system.is_cuda:
        return torch.cholesky_solve(rhs, chol), check
    # Large CPU systems: solve the transposed problem X^T = R^T L^-T L^-1,
    # the right-hand sides on the right, which LAPACK/MKL runs faster than
    # cholesky_solve's left-sided solves (measured: 170 vs 214 ms at
    # B = 4096).
    rows = torch.linalg.solve_triangular(chol.mT, rhs.t(), upper=True,
                                         left=False)
    rows = torch.linalg.solve_triangular(chol, rows, upper=False, left=False)
    return rows.t().contiguous(), check


@torch.no_grad()
def knowledge_ensemble(feats: torch.Tensor,
                       logits: torch.Tensor,
                       omega: float = 0.5,
                       temperature: float = 4.0,
                       global_ensemble: bool = False,
                       ensemble_group_size: Optional[int] = None,
                       nonfinite: str = 'raise') -> torch.Tensor:
    """Ensemble the predictions of similar images in a batch (BAKE).

    For unit-normalised features ``f_i`` the affinity is the row softmax of
    the cosine similarities ``f_i . f_j`` over ``j != i`` (no temperature),
    ``P = softmax(logits / T)``, and the soft targets are

    ``Q = (1 - omega) * (I - omega * A)^-1 P``,

    the closed form of propagating knowledge through the batch for infinitely
    many steps. Every row of ``Q`` sums to one. The computation is exact (a
    Cholesky solve, see :func:`propagate`), runs in float32 whatever the
    input dtype (autocast is switched off inside), and is never tracked by
    autograd.

    Args:
        feats (Tensor): Features of the batch, shape (B, D): the head's
            ``pre_logits``. Zero vectors are allowed.
        logits (Tensor): Logits of the batch, shape (B, K).
        omega (float): Propagation weight in [0, 1). ``0`` returns
            ``softmax(logits / T)``. Defaults to 0.5.
        temperature (float): Softmax temperature ``T`` > 0 for the
            predictions. Defaults to 4.0.
        global_ensemble (bool): Inside an initialised process group, gather
            the features and predictions of every rank (ranks may hold
            different batch sizes), build the affinity over the global batch
            and return this rank's rows. Without a process group it is the
            local computation. Defaults to False.
        ensemble_group_size (int, optional): With ``global_ensemble``,
            ensemble within consecutive groups of this many ranks instead of
            over all ranks (the last group may be smaller). None means all
            ranks. Defaults to None.
        nonfinite (str): What to do when the ensembled batch holds inf or
            NaN (e.g. an fp16 overflow): ``'raise'`` a ValueError (this
            check synchronises with the device), or ``'skip'``: return each
            row's own softened prediction ``softmax(logits / T)`` for the
            whole batch, so that the distillation term vanishes for this
            step, without any host synchronisation. The decision is taken
            on the gathered batch, so every rank of a group takes the same
            branch. Defaults to ``'raise'``.

    Returns:
        Tensor: The targets ``Q`` for this rank's rows, float32, shape
        (B, K), on the device of ``logits``. Finite inputs always give
        finite targets.

    Raises:
        ValueError: For an argument out of range, mismatched shapes, or
            (with ``nonfinite='raise'``) non-finite values.
    """
    _check_args(feats, logits, omega, temperature)
    if nonfinite not in ('raise', 'skip'):
        raise ValueError("nonfinite must be 'raise' or 'skip', but got "
                         f'{nonfinite!r}.')
    feats, probs = soften(feats, logits, temperature)
    own_probs, offset, num = probs, 0, feats.size(0)
    if global_ensemble:
        feats, probs, offset = gather_ensemble_batch(feats, probs,
                                                     ensemble_group_size)
    targets, check = propagate(feats, probs, omega)
    targets = targets[offset:offset + num]
    if nonfinite == 'skip':
        return torch.where(torch.isfinite(check), targets, own_probs)
    if not math.isfinite(check.item()):
        raise ValueError(
            'knowledge_ensemble got non-finite feats or logits (inf or '
            'NaN) in the ensembled batch; targets would be NaN.')
    return targets
