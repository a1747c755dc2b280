"""Gather the rows that BAKE ensembles from the ranks of a process group."""
import math
import warnings
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

# Made once per (world size, group size): new_group is a collective.
_GROUPS: Dict[Tuple[int, int], List[object]] = {}


def _ensemble_group(group_size: Optional[int]) -> Tuple[object, int]:
    """This rank's group (None for the world) and its number of ranks."""
    if not (dist.is_available() and dist.is_initialized()):
        return None, 1
    world_size = dist.get_world_size()
    if group_size is None or group_size >= world_size:
        return None, world_size
    if (world_size, group_size) not in _GROUPS:
        _GROUPS[world_size, group_size] = [
            dist.new_group(list(range(i, min(i + group_size, world_size))))
            for i in range(0, world_size, group_size)
        ]
    group = _GROUPS[world_size, group_size][dist.get_rank() // group_size]
    return group, dist.get_world_size(group)


def ensemble_world_size(group_size: Optional[int] = None) -> int:
    """Number of ranks ensembled together (1 without a process group)."""
    return _ensemble_group(group_size)[1]


class EnsembleGroup:
    """The ranks whose batches BAKE ensembles, and the shape they agreed on.

    Args:
        group_size (int, optional): Ensemble within consecutive groups of
            this many ranks; None for all ranks. Defaults to None.
    """

    def __init__(self, group_size: Optional[int] = None) -> None:
        if not (group_size is None
                or type(group_size) is int and group_size >= 1):
            raise ValueError('ensemble_group_size must be None or an int '
                             f'>= 1, but got {group_size!r}.')
        self.group_size = group_size
        self.shape: Optional[Tuple[int, int, int]] = None  # rows, D, K


@torch.no_grad()
def gather_ensemble_batch(
        feats: torch.Tensor, probs: torch.Tensor,
        group: EnsembleGroup) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Gather features and predictions of every rank of ``group``.

    The first call exchanges the shapes (a small collective, a host read):
    all ranks raise the same ValueError if feature or class dimensions
    differ, else ``group.shape`` keeps the largest batch. Then each rank
    sends that many rows (its own, then zeros): one collective of a fixed
    size, no host read. A rank with more rows (or other dimensions) sends
    NaN and warns, so that every rank's NaN guard picks its own predictions.

    Args:
        feats (Tensor): This rank's features, shape (B_r, D).
        probs (Tensor): This rank's predictions, shape (B_r, K).
        group (EnsembleGroup): The ranks and the shape they agreed on.

    Returns:
        tuple: ``(all_feats, all_probs, start)``: the group's rows in rank
        order (zero rows included) and the index of this rank's first row.
    """
    process_group, num_ranks = _ensemble_group(group.group_size)
    mine = (feats.size(0), feats.size(1), probs.size(1))
    if group.shape is None:
        shape = torch.tensor(mine, device=feats.device)
        shapes = shape.repeat(num_ranks, 1)
        dist.all_gather(list(shapes), shape, group=process_group)
        shapes = shapes.tolist()  # the one host read
        if len({(d, k) for _, d, k in shapes}) != 1:
            raise ValueError(
                'global_ensemble needs the same feature and class dimensions '
                'on every rank, but got (feature_dim, num_classes) per rank: '
                f'{[(d, k) for _, d, k in shapes]}.')
        group.shape = (max(n for n, _, _ in shapes), ) + mine[1:]
    rows, dim, classes = group.shape
    fits = mine[0] <= rows and mine[1:] == (dim, classes)
    message = feats.new_full((rows, dim + classes), 0.0 if fits else math.nan)
    if fits:
        message[:mine[0]] = torch.cat([feats, probs], dim=1)
    else:
        warnings.warn(
            f'BAKE global_ensemble: this rank holds {mine[0]} images of '
            f'{mine[1]} features and {mine[2]} classes, its group agreed on '
            f'at most {rows} of {dim} and {classes} at the first step: every '
            'rank of the group uses its own predictions in this step.')
    gathered = message.new_empty((num_ranks * rows, dim + classes))
    dist.all_gather(
        list(gathered.chunk(num_ranks)), message, group=process_group)
    if not fits:
        return torch.full_like(feats, math.nan), probs, 0
    start = dist.get_rank(process_group) * rows
    return (gathered[:, :dim].contiguous(), gathered[:,
                                                     dim:].contiguous(), start)
