"""global_ensemble in real gloo process groups of 2 and 3 ranks (CUDA, in
test_gpu.py: the same steps, CUDA graphs on and off)."""
import contextlib
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from mmbake.models import BAKEHead, knowledge_ensemble
from tests.dist_utils import run_distributed

pytestmark = pytest.mark.dist

DIM, CLASSES = 16, 7
# One training run per world size: at most 8 images per rank at the first
# step (the size the ranks agree on), then as many or fewer (a plain
# sampler's last batch) and, at step 3, one rank's 9: more than agreed.
STEPS = {
    2: [(8, 8), (8, 8), (8, 5), (9, 8), (3, 8)],
    3: [(8, 6, 8), (8, 8, 8), (4, 1, 6), (8, 9, 8), (2, 3, 5)],
}
GROUP_SIZES = {2: [None], 3: [None, 2]}  # 2 of 3: groups {0, 1} and {2}


class Counter(TorchDispatchMode):
    """A spy on one step (every operation runs as without it): every
    tensor operation passes the dispatcher, whatever Python call started
    it; ``c10d`` operators are the collectives (kept with their tensors'
    shapes), ``aten._local_scalar_dense`` each read of a value into Python
    (``item``, ``bool``, ``int``, ``float``). ``tolist``, ``numpy``, ``cpu``
    read a CPU tensor without an operator: they are wrapped for the step.
    """

    def __init__(self):
        super().__init__()
        self.collectives, self.reads, self.saved = [], 0, {}

    def __enter__(self):
        for name in ('tolist', 'numpy', 'cpu'):
            self.saved[name] = real = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self.spy(real))
        return super().__enter__()

    def spy(self, real):

        def read(*args, **kwargs):
            self.reads += 1
            return real(*args, **kwargs)

        return read

    def __exit__(self, *exc):
        for name, real in self.saved.items():
            setattr(torch.Tensor, name, real)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func).startswith('c10d.'):
            self.collectives.append([
                tuple(t.shape) for t in tree_leaves(args) if torch.is_tensor(t)
            ])
        self.reads += str(func).startswith('aten._local_scalar_dense')
        return func(*args, **(kwargs or {}))


def rank_batch(rank, sizes, step=0):
    gen = torch.Generator().manual_seed(100 * step + rank)
    return (torch.randn(sizes[rank], DIM, generator=gen),
            3 * torch.randn(sizes[rank], CLASSES, generator=gen))


def group_batch(rank, world_size, group_size, sizes, step=0):
    """The ranks of ``rank``'s group, their batches concatenated, and the
    rows of ``rank`` in them."""
    first = rank // (group_size or world_size) * (group_size or world_size)
    group = range(first, min(first + (group_size or world_size), world_size))
    feats, logits = (
        torch.cat(t)
        for t in zip(*[rank_batch(r, sizes, step) for r in group]))
    start = sum(sizes[r] for r in group if r < rank)
    return group, feats, logits, slice(start, start + sizes[rank])


def make_head(group_size, cuda_graph=True):
    torch.manual_seed(0)  # the same weights on every rank
    kwargs = dict(ensemble_group_size=group_size, cuda_graph=cuda_graph)
    return BAKEHead(CLASSES, DIM, bake_weight=0.7, **kwargs)


def distributed_cases(rank, world_size, device='cpu', cuda_graph=True):
    """Per group size, one BAKEHead through STEPS: per step its loss_bake,
    feature gradient, collectives and host reads (counted on the CPU) and
    warnings. Then knowledge_ensemble's two error paths."""
    from mmpretrain.structures import DataSample
    steps, graphs = {}, {}
    for group_size in GROUP_SIZES[world_size]:
        head = make_head(group_size, cuda_graph).to(device)
        for step, sizes in enumerate(STEPS[world_size]):
            feats = rank_batch(rank, sizes, step)[0].to(device)
            samples = [
                DataSample().set_gt_label(i // 2 % CLASSES).to(device)
                for i in range(sizes[rank])
            ]
            counter = Counter()
            with warnings.catch_warnings(record=True) as caught, \
                    counter if device == 'cpu' else contextlib.nullcontext():
                warnings.simplefilter('always')
                loss = head.loss((feats.requires_grad_(True), ),
                                 samples)['loss_bake']
                loss.backward()
            warned = [
                str(w.message) for w in caught
                if 'agreed' in str(w) or 'CUDAGraphs' in str(w)
            ]
            steps[group_size,
                  step] = (loss.detach().cpu(), feats.grad.cpu(),
                           counter.collectives, counter.reads, warned)
        graphs[group_size] = len(head._graphs or ())
    errors = {}
    try:  # one rank's feature size differs: every rank must raise
        knowledge_ensemble(
            torch.randn(4, DIM + rank, device=device),
            torch.randn(4, CLASSES, device=device),
            global_ensemble=True)
    except ValueError as err:
        errors['mismatch'] = str(err)
    feats, logits = rank_batch(rank, (4, ) * world_size)
    logits[0, 0] = float('nan') if rank == 1 else logits[0, 0]
    errors['nonfinite'] = knowledge_ensemble(
        feats.to(device), logits.to(device), global_ensemble=True).cpu()
    errors['own'] = torch.softmax(logits / 4.0, dim=1)
    return steps, errors, graphs


def single_process(rank, world_size, group_size, step, ensembled):
    """loss_bake and feature gradient of ``rank`` computed in one process
    over its group's batches; its own predictions as targets if not
    ``ensembled``."""
    head = make_head(group_size)
    _, feats, _, rows = group_batch(rank, world_size, group_size,
                                    STEPS[world_size][step], step)
    with torch.no_grad():
        logits = head.fc(feats)
        targets = knowledge_ensemble(feats, logits) if ensembled else \
            F.softmax(logits / 4.0, dim=1)
    mine = feats[rows].clone().requires_grad_(True)
    # The KL of this rank's images only; no gradient through the targets.
    loss = 0.7 * 16.0 * F.kl_div(
        F.log_softmax(head.fc(mine) / 4.0, dim=1),
        targets[rows],
        reduction='batchmean')
    loss.backward()
    return loss.detach(), mine.grad


def check_steps(results, world_size, counted=True, **tolerance):
    """``distributed_cases`` of every rank: against one process and, where
    ``counted``, the collectives and host reads of every step."""
    for rank, (steps, errors, _) in enumerate(results):
        for (group_size, step), out in steps.items():
            loss, grad, collectives, reads, warned = out
            sizes = STEPS[world_size][step]
            group = group_batch(rank, world_size, group_size, sizes)[0]
            larger = [r for r in group if sizes[r] > 8]
            for got, want in zip((loss, grad),
                                 single_process(rank, world_size, group_size,
                                                step, not larger)):
                torch.testing.assert_close(got, want, **tolerance)
            # The first step exchanges the shapes, then the rows; later
            # steps only the rows. A group of one rank gathers nothing.
            rows = [(8, DIM + CLASSES)] * (len(group) + 1)
            expected = [] if len(group) == 1 else [rows] if step else \
                [[(3, )] * (len(group) + 1), rows]
            assert not counted or collectives == expected and (step == 0
                                                               or reads == 0)
            assert len(warned) == (rank in larger), warned
            assert rank not in larger or '9 images of 16 features and 7 ' \
                'classes' in warned[0] and 'at most 8 of 16 and 7' in warned[0]
        assert 'same feature and class dimensions' in errors['mismatch']
        assert str([(16 + r, 7) for r in range(world_size)]) in \
            errors['mismatch']
        # A NaN on rank 1 makes every rank fall back to its own
        # predictions (no BAKE term), and no rank waits on another.
        torch.testing.assert_close(
            errors['nonfinite'], errors['own'], equal_nan=True, **tolerance)


@pytest.mark.parametrize('world_size', [2, 3])
def test_global_ensemble_in_process_group(world_size):
    """BAKEHead alone (no DDP or SyncBN, whose collectives are not mmbake's):
    the ranks agree on the batch shape at the first step (two collectives);
    every later step makes one collective of that size and no host read.
    Shorter batches give the single-process loss and gradient; a larger
    one makes every rank of its group train on its own predictions (no
    BAKE gradient), with a warning on that rank; the next step is normal.
    Different feature sizes raise the same error on every rank; a NaN on
    one rank falls back on all."""
    check_steps(run_distributed(distributed_cases, world_size), world_size)
