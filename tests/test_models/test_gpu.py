"""Checks that need a CUDA device; run by tools/gpu_check.sh.

Skipped on machines without CUDA (CI has none).
"""
import os

import pytest
import torch
import torch.distributed as dist

from mmbake.models import BAKEHead, knowledge_ensemble
from tests.dist_utils import free_port, run_distributed

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA'),
]


@pytest.mark.parametrize('num', [2, 64, 512])
def test_cuda_ensemble_equals_cpu(num):
    gen = torch.Generator().manual_seed(num)
    feats = torch.randn(num, 256, generator=gen)
    logits = 3 * torch.randn(num, 100, generator=gen)
    on_gpu = knowledge_ensemble(feats.cuda(), logits.cuda())
    assert on_gpu.is_cuda and on_gpu.dtype == torch.float32
    torch.testing.assert_close(on_gpu.cpu(), knowledge_ensemble(feats, logits),
                               atol=1e-5, rtol=1e-4)


def test_fp16_autocast_gives_float32_targets():
    feats = torch.randn(64, 256, device='cuda')
    logits = 3 * torch.randn(64, 100, device='cuda')
    with torch.autocast('cuda', dtype=torch.float16):
        targets = knowledge_ensemble(feats.half(), logits.half())
    assert targets.dtype == torch.float32
    assert torch.isfinite(targets).all()
    torch.testing.assert_close(targets.sum(1), torch.ones(64, device='cuda'))


def test_amp_fp16_training_step_of_a_classifier():
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet_CIFAR', depth=18),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='BAKEHead', num_classes=10, in_channels=512))).cuda()
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler('cuda')
    images = torch.randn(32, 3, 32, 32, device='cuda')
    samples = [DataSample().set_gt_label(i // 2 % 10).to('cuda')
               for i in range(32)]
    for _ in range(3):
        optim.zero_grad()
        with torch.autocast('cuda', dtype=torch.float16):
            losses = model(images, samples, mode='loss')
        assert set(losses) == {'loss_ce', 'loss_bake'}
        assert all(torch.isfinite(v) for v in losses.values())
        assert losses['loss_bake'].dtype == torch.float32
        scaler.scale(sum(losses.values())).backward()
        scaler.step(optim)
        scaler.update()


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
        from mmpretrain.structures import DataSample
        samples = [DataSample().set_gt_label(i // 2 % 10).to('cuda')
                   for i in range(32)]
        losses = head.loss((feats, ), samples)
        assert torch.isfinite(losses['loss_bake'])
        dist.barrier()
    finally:
        dist.destroy_process_group()


def bake_head_pair(**kwargs):
    """Two BAKE heads with the same weights: CUDA graphs on and off."""
    torch.manual_seed(0)
    graphed = BAKEHead(num_classes=100, in_channels=256, **kwargs).cuda()
    eager = BAKEHead(num_classes=100, in_channels=256, cuda_graph=False,
                     **kwargs).cuda()
    eager.load_state_dict(graphed.state_dict(), strict=True)
    return graphed, eager


def head_step(head, batches, amp):
    """Losses and classifier gradient after one backward of all batches."""
    from mmpretrain.structures import DataSample
    head.zero_grad(set_to_none=True)
    total, logged = 0, []
    for feats in batches:
        samples = [DataSample().set_gt_label(i // 2 % 100).to('cuda')
                   for i in range(feats.size(0))]
        with torch.autocast('cuda', dtype=torch.float16, enabled=amp):
            losses = head.loss((feats, ), samples)
        logged.append(losses['loss_bake'].detach())
        total = total + sum(losses.values())
    total.backward()
    return torch.stack(logged), head.fc.weight.grad.clone()


@pytest.mark.parametrize('amp', [False, True])
def test_cuda_graph_equals_eager(amp):
    import warnings
    graphed, eager = bake_head_pair(global_ensemble=False)
    gen = torch.Generator(device='cuda').manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # capturing must succeed
        # Two batch shapes, and two forward passes before one backward:
        # replays must not overwrite what an earlier pass returned.
        for sizes in ([32], [32], [20], [32, 32], [32]):
            batches = [torch.randn(n, 256, device='cuda', generator=gen)
                       for n in sizes]
            loss, grad = head_step(graphed, batches, amp)
            ref_loss, ref_grad = head_step(eager, batches, amp)
            assert torch.isfinite(loss).all() and (loss > 0).all()
            torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-3)
    assert len(graphed._graphs) == 2 and len(eager._graphs) == 0


def test_deep_copy_after_capture_and_non_finite_batch():
    import copy
    graphed, eager = bake_head_pair(global_ensemble=False)
    feats = torch.randn(16, 256, device='cuda')
    loss, _ = head_step(graphed, [feats], amp=False)
    clone = copy.deepcopy(graphed)  # what mmengine's EMA hook does
    assert len(clone._graphs) == 0
    torch.testing.assert_close(head_step(clone, [feats], amp=False)[0], loss)
    # A NaN in the (already captured) shape: zero BAKE term, zero gradient
    # from it, no host synchronisation needed.
    feats[3, 5] = float('nan')
    logits = graphed.fc(feats).detach().requires_grad_(True)
    bake = graphed._bake_loss(feats, logits)
    bake.backward()
    assert bake.item() == 0.0 and logits.grad.abs().sum().item() == 0.0


def gathered_graph_case(rank, world_size):
    """Graphed and eager BAKE heads over a batch gathered from 2 ranks."""
    import warnings
    torch.manual_seed(0)
    graphed = BAKEHead(num_classes=50, in_channels=64).cuda()
    eager = BAKEHead(num_classes=50, in_channels=64, cuda_graph=False).cuda()
    eager.load_state_dict(graphed.state_dict(), strict=True)
    gen = torch.Generator().manual_seed(rank)
    steps = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        # Equal sizes twice (replays), then unequal sizes across ranks.
        for size in (12, 12, 7 + 3 * rank):
            feats = torch.randn(size, 64, generator=gen).cuda()
            step = []
            for head in (graphed, eager):
                logits = head.fc(feats).detach().requires_grad_(True)
                loss = head._bake_loss(feats, logits)
                loss.backward()
                step.append((loss.detach().cpu(), logits.grad.cpu()))
            steps.append(step)
    failures = [str(w.message) for w in caught
                if 'CUDAGraphCache' in str(w.message)]
    return steps, len(graphed._graphs), failures


def test_cuda_graphs_around_the_gather_of_two_ranks():
    # Two processes share the one GPU (gloo carries CUDA tensors; NCCL
    # refuses two ranks on one device): the term before the gather and the
    # term after it are two graphs; the gather itself stays eager.
    results = run_distributed(gathered_graph_case, 2)
    for steps, num_graphs, failures in results:
        assert failures == []
        # Before the gather: batch shapes 12 and 7/10; after: gathered
        # shapes 24 and 17 (each with this rank's offset).
        assert num_graphs == 4
        for (loss, grad), (ref_loss, ref_grad) in steps:
            torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-3)
            assert loss > 0
