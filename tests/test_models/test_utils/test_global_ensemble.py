"""global_ensemble=True in real gloo process groups of 2 and 3 ranks."""
import pytest
import torch

from mmbake.models import knowledge_ensemble
from tests.dist_utils import run_distributed
from tests.test_models.test_utils.test_knowledge_ensemble import \
    reference_targets as _reference


def reference_targets(feats, logits):
    return _reference(feats, logits, 0.5, 4.0)


pytestmark = pytest.mark.dist

DIM, CLASSES = 16, 7


def rank_batch(rank, sizes):
    """The batch of ``rank``: ranks hold different numbers of images."""
    gen = torch.Generator().manual_seed(100 + rank)
    return (torch.randn(sizes[rank], DIM, generator=gen),
            torch.randn(sizes[rank], CLASSES, generator=gen) * 3)


CASES = {
    3: [((4, 1, 6), None), ((4, 1, 6), 2), ((2, 3, 5), 1)],
}


def ensemble_cases(rank, world_size):
    """Every case of this world size, then the two error paths."""
    out = {}
    for sizes, group_size in CASES[world_size]:
        feats, logits = rank_batch(rank, sizes)
        # Gradients must not flow through the gather.
        feats.requires_grad_(True)
        targets = knowledge_ensemble(
            feats,
            logits,
            global_ensemble=True,
            ensemble_group_size=group_size)
        assert not targets.requires_grad
        out[sizes, group_size] = targets
    try:  # one rank's feature size differs: every rank must raise
        knowledge_ensemble(
            torch.randn(4, DIM + rank),
            torch.randn(4, CLASSES),
            global_ensemble=True)
        out['mismatch'] = 'no error'
    except ValueError as err:
        out['mismatch'] = str(err)
    feats, logits = rank_batch(rank, (4, ) * world_size)
    if rank == 1:
        logits[0, 0] = float('nan')
    out['nonfinite'] = knowledge_ensemble(feats, logits, global_ensemble=True)
    out['own'] = torch.softmax(logits / 4.0, dim=1)
    return out


def expected_targets(rank, sizes, group_size, ensemble=knowledge_ensemble):
    """Single-process computation over the concatenated group batch."""
    world = len(sizes)
    group_size = group_size or world
    first = rank // group_size * group_size
    members = range(first, min(first + group_size, world))
    batches = [rank_batch(r, sizes) for r in members]
    feats = torch.cat([b[0] for b in batches])
    logits = torch.cat([b[1] for b in batches])
    targets = ensemble(feats, logits)
    offset = sum(sizes[r] for r in members if r < rank)
    return targets[offset:offset + sizes[rank]]


def check_ensemble(results, world_size):
    """``ensemble_cases`` of every rank against one process."""
    for rank, out in enumerate(results):
        for sizes, group_size in CASES[world_size]:
            targets = out[sizes, group_size]
            assert targets.shape == (sizes[rank], CLASSES)
            # Equal to the single-process result over the (group's)
            # concatenated batch, though ranks hold different sizes.
            torch.testing.assert_close(
                targets, expected_targets(rank, sizes, group_size))
            # ... and to the float64 explicit inverse within 1e-6.
            torch.testing.assert_close(
                targets.double(),
                expected_targets(rank, sizes, group_size, reference_targets),
                atol=1e-6,
                rtol=0)
        assert 'same feature and class dimensions' in out['mismatch']
        assert '(16, 7), (17, 7)' in out['mismatch']
        # A NaN on rank 1 makes every rank fall back to its own
        # predictions (no BAKE term), and no rank waits on another.
        torch.testing.assert_close(
            out['nonfinite'], out['own'], equal_nan=True)


def make_head(group_size):
    from mmbake.models import BAKEHead
    torch.manual_seed(0)  # the same weights on every rank
    return BAKEHead(
        num_classes=CLASSES,
        in_channels=DIM,
        bake_weight=0.7,
        ensemble_group_size=group_size)


def head_cases(rank, world_size):
    """BAKEHead's loss and feature gradient with a gathered batch."""
    from mmpretrain.structures import DataSample
    out = {}
    for sizes, group_size in CASES[world_size]:
        feats = rank_batch(rank, sizes)[0].requires_grad_(True)
        samples = [
            DataSample().set_gt_label(i // 2 % CLASSES)
            for i in range(sizes[rank])
        ]
        loss = make_head(group_size).loss((feats, ), samples)['loss_bake']
        loss.backward()
        out[sizes, group_size] = (loss.detach(), feats.grad)
    return out


def check_head(results, world_size):
    """``head_cases`` of every rank against one process."""
    for rank, out in enumerate(results):
        for sizes, group_size in CASES[world_size]:
            loss, grad = out[sizes, group_size]
            # The rank's rows of the group's ensemble of the head's logits,
            # distilled into this rank's logits only: KL averaged over this
            # rank's images, no gradient through the targets.
            head = make_head(group_size)
            group = group_size or world_size
            members = range(rank // group * group,
                            min(rank // group * group + group, world_size))
            all_feats = torch.cat([rank_batch(r, sizes)[0] for r in members])
            with torch.no_grad():
                targets = knowledge_ensemble(all_feats, head.fc(all_feats))
            start = sum(sizes[r] for r in members if r < rank)
            targets = targets[start:start + sizes[rank]]
            feats = rank_batch(rank, sizes)[0].requires_grad_(True)
            log_student = torch.log_softmax(head.fc(feats) / 4.0, dim=1)
            expected = 0.7 * 16.0 * torch.nn.functional.kl_div(
                log_student, targets, reduction='batchmean')
            expected.backward()
            torch.testing.assert_close(loss, expected.detach())
            torch.testing.assert_close(grad, feats.grad)


def all_cases(rank, world_size):
    return ensemble_cases(rank, world_size), head_cases(rank, world_size)


def test_global_ensemble_and_head_loss_in_process_group():
    """One gloo run of three ranks (unequal batches, groups of 3, 2 and 1):
    ``knowledge_ensemble`` with ``global_ensemble`` and ``BAKEHead``'s loss
    over the gathered batch. Two-rank gloo runs: the calibration metric's
    test and the tools' (tests/test_reliability)."""
    results = run_distributed(all_cases, 3)
    check_ensemble([ensemble for ensemble, _ in results], 3)
    check_head([head for _, head in results], 3)
