"""Checks that need a CUDA device; run by tools/gpu_check.sh (which also
trains a classifier with fp16 AMP through tools/train.py).

Skipped on machines without CUDA (CI has none).
"""
import copy
import os
import warnings

import pytest
import torch
import torch.distributed as dist

from mmbake.models import BAKEHead, knowledge_ensemble
from tests.dist_utils import free_port, run_distributed
from tests.test_models.test_utils import \
    test_global_ensemble as global_ensemble

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA'),
]


def samples(num, classes=100):
    from mmpretrain.structures import DataSample
    return [
        DataSample().set_gt_label(i // 2 % classes).to('cuda')
        for i in range(num)
    ]


@pytest.mark.parametrize('num', [2, 64, 512])
def test_cuda_ensemble_equals_cpu(num):
    gen = torch.Generator().manual_seed(num)
    feats = torch.randn(num, 256, generator=gen)
    logits = 3 * torch.randn(num, 100, generator=gen)
    on_gpu = knowledge_ensemble(feats.cuda(), logits.cuda())
    assert on_gpu.is_cuda and on_gpu.dtype == torch.float32
    torch.testing.assert_close(
        on_gpu.cpu(), knowledge_ensemble(feats, logits), atol=1e-5, rtol=1e-4)
    with torch.autocast('cuda', dtype=torch.float16):  # float32 out
        targets = knowledge_ensemble(feats.cuda().half(), logits.cuda().half())
    assert targets.dtype == torch.float32 and torch.isfinite(targets).all()
    torch.testing.assert_close(targets.sum(1), torch.ones(num, device='cuda'))


def test_nccl_single_gpu_process_group():
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port()))
    dist.init_process_group('nccl', rank=0, world_size=1)
    try:
        feats = torch.randn(32, 64, device='cuda')
        logits = torch.randn(32, 10, device='cuda')
        torch.testing.assert_close(
            knowledge_ensemble(feats, logits, global_ensemble=True),
            knowledge_ensemble(feats, logits))
        head = BAKEHead(num_classes=10, in_channels=64).cuda()
        assert torch.isfinite(
            head.loss((feats, ), samples(32, 10))['loss_bake'])
        dist.barrier()
    finally:
        dist.destroy_process_group()


def head_step(head, batches, amp):
    """Losses and classifier gradient after one backward of all batches."""
    head.zero_grad(set_to_none=True)
    total, logged = 0, []
    for feats in batches:
        with torch.autocast('cuda', dtype=torch.float16, enabled=amp):
            losses = head.loss((feats, ), samples(feats.size(0)))
        logged.append(losses['loss_bake'].detach())
        total = total + sum(losses.values())
    total.backward()
    return torch.stack(logged), head.fc.weight.grad.clone()


@pytest.mark.parametrize('amp', [False, True])
def test_cuda_graph_equals_eager(amp):
    heads = [  # CUDA graphs on and off, the same weights
        BAKEHead(100, 256, cuda_graph=graph).cuda() for graph in (True, False)
    ]
    heads[1].load_state_dict(heads[0].state_dict())
    gen = torch.Generator(device='cuda').manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # capturing must succeed
        # Two batch shapes, and two forward passes before one backward:
        # replays must not overwrite what an earlier pass returned.
        for sizes in ([32], [32], [20], [32, 32], [32]):
            batches = [
                torch.randn(n, 256, device='cuda', generator=gen)
                for n in sizes
            ]
            loss, grad = head_step(heads[0], batches, amp)
            ref_loss, ref_grad = head_step(heads[1], batches, amp)
            assert torch.isfinite(loss).all() and (loss > 0).all()
            torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)
            torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=0)
    # Per batch shape: the targets and the KL term.
    assert len(heads[0]._graphs) == 4 and heads[1]._graphs is None
    clone = copy.deepcopy(heads[0])  # what mmengine's EMA hook does
    assert len(clone._graphs) == 0
    torch.testing.assert_close(head_step(clone, batches, amp)[0], loss)
    # A NaN in a captured shape: nothing is ensembled, so the finite rows
    # get no BAKE gradient; no host synchronisation needed.
    feats = batches[0].clone()
    feats[3, 5] = float('nan')
    feats.requires_grad_(True)
    heads[0].loss((feats, ), samples(32))['loss_bake'].backward()
    assert feats.grad[torch.arange(32, device='cuda') != 3].abs().sum() == 0


def test_global_ensemble_of_two_ranks_with_and_without_cuda_graphs():
    # test_global_ensemble's steps on CUDA: two ranks, NCCL where there are
    # two GPUs, else two processes share the one GPU over gloo (NCCL
    # refuses two ranks on one device). The parts before and after the
    # gather are graphs; the gather is eager.
    backend = 'nccl' if torch.cuda.device_count() >= 2 else 'gloo'
    runs = [
        run_distributed(
            global_ensemble.distributed_cases,
            2,
            'cuda',
            graph,
            backend=backend) for graph in (True, False)
    ]
    for results in runs:  # against one CPU process; no warning on graphs
        global_ensemble.check_steps(results, 2, False, atol=1e-5, rtol=0)
    for graphed, eager in zip(*runs):
        assert graphed[2][None] > 0 and eager[2][None] == 0
        for key, ours in graphed[0].items():
            for got, want in zip(ours[:2], eager[0][key][:2]):
                torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
