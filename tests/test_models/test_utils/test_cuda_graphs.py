"""CUDAGraphCache off the GPU; its GPU behaviour is in test_gpu.py."""
import copy
import pickle

import pytest
import torch

from mmbake.models.utils import CUDAGraphCache


def double_and_sum(x, y):
    return 2 * x, (x + y).sum()


def test_cpu_inputs_run_eagerly_without_capturing():
    cache = CUDAGraphCache()
    x, y = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4)
    doubled, total = cache(double_and_sum, x, y, key='f')
    torch.testing.assert_close(doubled, 2 * x.detach())
    torch.testing.assert_close(total, (x + y).sum().detach())
    # No autograd inside, nothing captured.
    assert not doubled.requires_grad and len(cache) == 0


def test_copies_and_pickles_are_empty_and_keep_settings():
    cache = CUDAGraphCache(max_graphs=3, warmup=4)
    for clone in (copy.deepcopy(cache), pickle.loads(pickle.dumps(cache))):
        assert isinstance(clone, CUDAGraphCache) and clone is not cache
        assert (clone.max_graphs, clone.warmup, len(clone)) == (3, 4, 0)


@pytest.mark.parametrize('kwargs, match', [
    (dict(max_graphs=-1), 'max_graphs must be >= 0'),
    (dict(warmup=0), 'warmup must be >= 1'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CUDAGraphCache(**kwargs)


def test_outputs_are_packed_per_dtype_and_returned_fresh():
    from mmbake.models.utils.cuda_graphs import _Graph
    outputs = (torch.tensor(2.5), torch.arange(6.).view(2, 3),
               torch.tensor([True, False]), torch.ones(3, 2).t())
    packed, shapes = _Graph.pack(outputs)
    # float32 outputs share one buffer: one copy per replay for them.
    assert [p.dtype for p in packed] == [torch.float32, torch.bool]
    assert packed[0].numel() == 1 + 6 + 6
    entry = _Graph(None, (), packed, shapes)
    fresh = entry.fresh_outputs()
    for got, expected in zip(fresh, outputs):
        assert torch.equal(got, expected)
    # Fresh: a later replay (here: writing the buffer) leaves them alone.
    packed[0].zero_()
    assert fresh[0].item() == 2.5 and fresh[1][1, 2].item() == 5.0
