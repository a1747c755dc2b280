"""Gather the rows that BAKE ensembles from the ranks of a process group.

``all_gather`` needs tensors of one shape on every rank, but the last batch
of an epoch, or a sampler that is not class-aware, can leave ranks with
different batch sizes. The sizes are therefore gathered first, every rank
pads its rows to the largest size, and the padding is dropped again after
the gather. No gradient flows through any of it.
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

# One ProcessGroup per (world size, group size): ``dist.new_group`` is a
# collective that every rank must call in the same order, so the groups are
# created once, the first time they are needed, and reused afterwards.
_GROUP_CACHE: Dict[Tuple[int, int], List[object]] = {}


def _ensemble_group(group_size: Optional[int]) -> Tuple[object, int]:
    """Return the process group of this rank and the number of its ranks.

    Args:
        group_size (int, optional): Number of consecutive ranks per group.
            None, or a value >= the world size, means the whole world.

    Returns:
        tuple: ``(group, group_world_size)``; ``group`` is None for the
        default (world) group.
    """
    world_size, rank = dist.get_world_size(), dist.get_rank()
    if group_size is not None and (not isinstance(group_size, int)
                                   or group_size < 1):
        raise ValueError('ensemble_group_size must be None or a positive '
                         f'int, but got {group_size!r}.')
    if group_size is None or group_size >= world_size:
        return None, world_size
    key = (world_size, group_size)
    if key not in _GROUP_CACHE:
        _GROUP_CACHE[key] = [
            dist.new_group(list(range(start, min(start + group_size,
                                                 world_size))))
            for start in range(0, world_size, group_size)
        ]
    index = rank // group_size
    size = min(group_size, world_size - index * group_size)
    return _GROUP_CACHE[key][index], size


def ensemble_world_size(group_size: Optional[int] = None) -> int:
    """Number of ranks whose rows this rank ensembles with (itself included).

    Args:
        group_size (int, optional): As in :func:`gather_ensemble_batch`.

    Returns:
        int: 1 without an initialised process group.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return _ensemble_group(group_size)[1]


def _all_gather_rows(rows: torch.Tensor, sizes: List[int], group) -> \
        torch.Tensor:
    """All-gather 2-D tensors whose first dimension differs across ranks."""
    longest = max(sizes)
    padded = rows.new_zeros((longest, rows.size(1)))
    padded[:rows.size(0)] = rows
    buffers = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(buffers, padded, group=group)
    return torch.cat([buf[:n] for buf, n in zip(buffers, sizes)], dim=0)


@torch.no_grad()
def gather_ensemble_batch(
        feats: torch.Tensor,
        probs: torch.Tensor,
        group_size: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Gather features and predictions of every rank of this rank's group.

    Without an initialised process group (or with a single rank) the inputs
    are returned unchanged.

    Args:
        feats (Tensor): This rank's features, shape (B_r, D).
        probs (Tensor): This rank's predictions, shape (B_r, K).
        group_size (int, optional): Ensemble within consecutive groups of
            this many ranks; None for all ranks. Defaults to None.

    Returns:
        tuple: ``(all_feats, all_probs, offset)``: the rows of every rank of
        the group in rank order, and the index of this rank's first row.

    Raises:
        ValueError: If the ranks disagree on the feature or class dimension.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return feats, probs, 0
    group, group_world = _ensemble_group(group_size)
    if group_world == 1:
        return feats, probs, 0
    shape = torch.tensor([feats.size(0), feats.size(1), probs.size(1)],
                         dtype=torch.long, device=feats.device)
    shapes = [torch.empty_like(shape) for _ in range(group_world)]
    dist.all_gather(shapes, shape, group=group)
    shapes = [s.tolist() for s in shapes]
    dims = {(d, k) for _, d, k in shapes}
    if len(dims) != 1:
        raise ValueError(
            'global_ensemble needs the same feature and class dimensions on '
            'every rank, but got (feature_dim, num_classes) per rank: '
            f'{[(d, k) for _, d, k in shapes]}.')
    sizes = [n for n, _, _ in shapes]
    group_rank = dist.get_rank(group) if group is not None else \
        dist.get_rank()
    # Features and predictions travel in one message.
    rows = torch.cat([feats, probs], dim=1)
    gathered = _all_gather_rows(rows, sizes, group)
    offset = sum(sizes[:group_rank])
    return (gathered[:, :feats.size(1)].contiguous(),
            gathered[:, feats.size(1):].contiguous(), offset)
