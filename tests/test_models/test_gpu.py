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
    torch.testing.assert_close(
        on_gpu.cpu(), knowledge_ensemble(feats, logits), atol=1e-5, rtol=1e-4)


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
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='ResNet_CIFAR', depth=18),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='BAKEHead', num_classes=10,
                      in_channels=512))).cuda()
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler('cuda')
    images = torch.randn(32, 3, 32, 32, device='cuda')
    samples = [
        DataSample().set_gt_label(i // 2 % 10).to('cuda') for i in range(32)
    ]
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
        samples = [
            DataSample().set_gt_label(i // 2 % 10).to('cuda')
            for i in range(32)
        ]
        losses = head.loss((feats, ), samples)
        assert torch.isfinite(losses['loss_bake'])
        dist.barrier()
    finally:
        dist.destroy_process_group()


def bake_head_pair(**kwargs):
    """Two BAKE heads with the same weights: CUDA graphs on and off."""
    torch.manual_seed(0)
    graphed = BAKEHead(num_classes=100, in_channels=256, **kwargs).cuda()
    eager = BAKEHead(
        num_classes=100, in_channels=256, cuda_graph=False, **kwargs).cuda()
    eager.load_state_dict(graphed.state_dict(), strict=True)
    return graphed, eager


def head_step(head, batches, amp):
    """Losses and classifier gradient after one backward of all batches."""
    from mmpretrain.structures import DataSample
    head.zero_grad(set_to_none=True)
    total, logged = 0, []
    for feats in batches:
        samples = [
            DataSample().set_gt_label(i // 2 % 100).to('cuda')
            for i in range(feats.size(0))
        ]
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
            batches = [
                torch.randn(n, 256, device='cuda', generator=gen)
                for n in sizes
            ]
            loss, grad = head_step(graphed, batches, amp)
            ref_loss, ref_grad = head_step(eager, batches, amp)
            assert torch.isfinite(loss).all() and (loss > 0).all()
            torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)
            torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=0)
    # Per batch shape: the targets and the KL term.
    assert len(graphed._graphs) == 4 and eager._graphs is None


def test_deep_copy_after_capture_and_non_finite_batch():
    import copy
    graphed, eager = bake_head_pair(global_ensemble=False)
    feats = torch.randn(16, 256, device='cuda')
    loss, _ = head_step(graphed, [feats], amp=False)
    clone = copy.deepcopy(graphed)  # what mmengine's EMA hook does
    assert len(clone._graphs) == 0
    torch.testing.assert_close(head_step(clone, [feats], amp=False)[0], loss)
    # A NaN in the (already captured) shape: nothing is ensembled, so the
    # finite rows get no BAKE gradient; no host synchronisation needed.
    feats[3, 5] = float('nan')
    feats.requires_grad_(True)
    from mmpretrain.structures import DataSample
    samples = [DataSample().set_gt_label(i // 2).to('cuda') for i in range(16)]
    graphed.loss((feats, ), samples)['loss_bake'].backward()
    finite_rows = torch.arange(16, device='cuda') != 3
    assert feats.grad[finite_rows].abs().sum().item() == 0.0


class Holder:
    """A hashable argument holding a tensor: a graph reads the memory the
    tensor had at capture, so rebinding ``value`` makes its input stale."""

    def __init__(self, value):
        self.value = value


def scaled(x, holder):
    return x * holder.value, x.sum()


def test_a_graph_with_a_stale_input_is_caught_and_turned_off():
    from mmbake.models.utils.cuda_graphs import CUDAGraphs
    graphs = CUDAGraphs()
    holder = Holder(torch.tensor(2.0, device='cuda'))
    first, second, third = (torch.randn(8, 4, device='cuda') for _ in range(3))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # first replay: right
        torch.testing.assert_close(graphs(scaled, first, holder)[0], 2 * first)
    assert len(graphs) == 1
    old = holder.value  # kept alive: the graph still reads it
    holder.value = torch.tensor(3.0, device='cuda')
    with pytest.warns(UserWarning, match='replay of scaled differs'):
        out = graphs(scaled, second, holder)
    # Eager numbers from the check on, and eagerly from now on.
    torch.testing.assert_close(out[0], 3 * second, atol=0, rtol=0)
    torch.testing.assert_close(
        graphs(scaled, third, holder)[0], 3 * third, atol=0, rtol=0)
    assert len(graphs) == 0 and old.item() == 2.0


def rank_feats(rank, size):
    return torch.randn(
        size, 64, generator=torch.Generator().manual_seed(100 * rank + size))


# Equal sizes twice (replays), then unequal sizes across the two ranks.
GATHER_STEPS = [(12, 12), (12, 12), (7, 10)]


def gathered_case(rank, world_size):
    """BAKE heads over a batch gathered from 2 ranks, CUDA graphs on and
    off: loss_bake, the classifier gradient and the targets of each."""
    import warnings

    from mmpretrain.structures import DataSample
    heads = {}
    for name, graph in (('graphed', True), ('eager', False)):
        torch.manual_seed(0)
        heads[name] = BAKEHead(
            num_classes=50, in_channels=64, cuda_graph=graph).cuda()
    steps = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for sizes in GATHER_STEPS:
            feats = rank_feats(rank, sizes[rank]).cuda()
            samples = [
                DataSample().set_gt_label(i // 2).to('cuda')
                for i in range(sizes[rank])
            ]
            step = {}
            for name, head in heads.items():
                head.zero_grad()
                loss = head.loss((feats, ), samples)['loss_bake']
                loss.backward()
                with torch.no_grad():  # the targets the head trained on
                    targets = knowledge_ensemble(
                        feats,
                        head.fc(feats),
                        global_ensemble=True,
                        cuda_graphs=head._graphs)
                step[name] = (loss.detach().cpu(), head.fc.weight.grad.cpu(),
                              targets.cpu())
            steps.append(step)
    failures = [
        str(w.message) for w in caught if 'CUDAGraphs' in str(w.message)
    ]
    return steps, len(heads['graphed']._graphs), failures


def cpu_reference(rank, sizes):
    """One CPU process over both ranks' images: this rank's loss_bake,
    classifier gradient and targets."""
    torch.manual_seed(0)
    head = BAKEHead(num_classes=50, in_channels=64, cuda_graph=False)
    feats = torch.cat([rank_feats(r, n) for r, n in enumerate(sizes)])
    with torch.no_grad():
        targets = knowledge_ensemble(feats, head.fc(feats))
    rows = slice(sum(sizes[:rank]), sum(sizes[:rank + 1]))
    logits = head.fc(feats[rows])
    loss = 16.0 * torch.nn.functional.kl_div(
        torch.log_softmax(logits / 4.0, dim=1),
        targets[rows],
        reduction='batchmean')
    loss.backward()
    return loss.detach(), head.fc.weight.grad, targets[rows]


def test_cuda_graphs_around_the_gather_of_two_ranks():
    # Two ranks: NCCL where there are two GPUs; else two processes share
    # the one GPU over gloo (NCCL refuses two ranks on one device). The
    # parts before and after the gather are graphs; the gather is eager.
    backend = 'nccl' if torch.cuda.device_count() >= 2 else 'gloo'
    results = run_distributed(gathered_case, 2, backend=backend)
    for rank, (steps, num_graphs, failures) in enumerate(results):
        assert failures == []
        # Before the gather and the KL: local shapes 12 and 7/10; after
        # it: gathered shapes 24 and 17 (with this rank's rows). The
        # direct knowledge_ensemble calls reuse the head's graphs.
        assert num_graphs == 6
        for sizes, step in zip(GATHER_STEPS, steps):
            assert step['graphed'][0] > 0
            # loss, classifier gradient, targets
            for ours, eager, cpu in zip(step['graphed'], step['eager'],
                                        cpu_reference(rank, sizes)):
                torch.testing.assert_close(ours, eager, atol=1e-6, rtol=0)
                torch.testing.assert_close(ours, cpu, atol=1e-5, rtol=0)
