"""Gather the rows that BAKE ensembles from the ranks of a process group."""
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

# ``dist.new_group`` is a collective that every rank must call in the same
# order, so the groups of each (world size, group size) are made once.
_GROUPS: Dict[Tuple[int, int], List[object]] = {}


def _ensemble_group(group_size: Optional[int]) -> Tuple[object, int]:
    """This rank's group (None for the world) and its number of ranks."""
    world_size = dist.get_world_size()
    if group_size is None or group_size >= world_size:
        return None, world_size
    key = (world_size, group_size)
    if key not in _GROUPS:
        _GROUPS[key] = [
            dist.new_group(list(range(i, min(i + group_size, world_size))))
            for i in range(0, world_size, group_size)
        ]
    first = dist.get_rank() // group_size * group_size
    return (_GROUPS[key][first // group_size],
            min(group_size, world_size - first))


def ensemble_world_size(group_size: Optional[int] = None) -> int:
    """Number of ranks ensembled together (1 without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return _ensemble_group(group_size)[1]


@torch.no_grad()
def gather_ensemble_batch(feats: torch.Tensor,
                          probs: torch.Tensor,
                          group_size: Optional[int] = None
                          ) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Gather features and predictions of every rank of this rank's group.

    Args:
        feats (Tensor): This rank's features, shape (B_r, D).
        probs (Tensor): This rank's predictions, shape (B_r, K).
        group_size (int, optional): Consecutive ranks per group; None for
            all ranks. Defaults to None.

    Returns:
        tuple: ``(all_feats, all_probs, start)``: the rows of the group in
        rank order, and the index of this rank's first row.
    """
    group, num_ranks = _ensemble_group(group_size)
    shape = torch.tensor(
        [feats.size(0), feats.size(1),
         probs.size(1)], device=feats.device)
    shapes = [torch.empty_like(shape) for _ in range(num_ranks)]
    dist.all_gather(shapes, shape, group=group)
    sizes, dims = zip(*[(n, (d, k))
                        for n, d, k in (s.tolist() for s in shapes)])
    if len(set(dims)) != 1:
        raise ValueError(
            'global_ensemble needs the same feature and class dimensions on '
            'every rank, but got (feature_dim, num_classes) per rank: '
            f'{list(dims)}.')
    # One message, padded: ranks may hold different batch sizes.
    rows = feats.new_zeros((max(sizes), feats.size(1) + probs.size(1)))
    rows[:feats.size(0)] = torch.cat([feats, probs], dim=1)
    buffers = [torch.empty_like(rows) for _ in sizes]
    dist.all_gather(buffers, rows, group=group)
    gathered = torch.cat([buf[:n] for buf, n in zip(buffers, sizes)])
    start = sum(sizes[:dist.get_rank(group)])
    return (gathered[:, :feats.size(1)].contiguous(),
            gathered[:, feats.size(1):].contiguous(), start)
