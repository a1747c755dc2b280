"""CUDAGraphs off the GPU; its GPU behaviour is in test_gpu.py."""
import copy
import math
import pickle
import warnings

import pytest
import torch

from mmbake.models.utils.cuda_graphs import (CHECKED_REPLAYS, CUDAGraphs,
                                             difference, layout, pack,
                                             run_graphed, unpack)


def scale_rows(x, scale):
    return scale * x, x.sum(1)


def test_cpu_inputs_run_eagerly_copies_start_empty():
    graphs = CUDAGraphs(max_graphs=3)
    x = torch.randn(3, 4, requires_grad=True)
    scaled, total = graphs(scale_rows, x, 2.0)
    torch.testing.assert_close(scaled, 2 * x.detach())
    # No autograd inside, nothing captured; without graphs, the function.
    assert not scaled.requires_grad and len(graphs) == 0
    torch.testing.assert_close(run_graphed(None, scale_rows, x, 2.0)[1], total)
    for clone in (copy.deepcopy(graphs), pickle.loads(pickle.dumps(graphs))):
        assert isinstance(clone, CUDAGraphs) and clone is not graphs
        assert (clone.max_graphs, len(clone)) == (3, 0)
    with pytest.raises(ValueError, match='max_graphs must be an int >= 0'):
        CUDAGraphs(max_graphs=-1)


# One dtype: one flat tensor to copy out of a graph.
@pytest.mark.parametrize('out, packed', [
    (torch.arange(6.).view(2, 3), 1),
    ((torch.ones(2, 3), torch.zeros(4)), 1),
    ((torch.ones(2), torch.zeros(3, dtype=torch.int64)), 2),
])
def test_pack_unpack_round_trip(out, packed):
    spec, tensors = pack(out)
    assert len(tensors) == packed
    back = unpack(spec, tensors)
    assert type(back) is type(out)
    if torch.is_tensor(out):
        back, out = (back, ), (out, )
    assert all(torch.equal(got, want) for got, want in zip(back, out))


def test_difference_and_layout():
    x = torch.tensor([[1.0, float('nan')], [float('inf'), 2.0]])
    assert difference(x, x.clone()) == 0.0
    assert difference((x, x), (x, x + 1e-3)) == pytest.approx(1e-3, rel=1e-4)
    # NaN or infinity where the other has a number, other shapes or dtypes.
    finite = x.nan_to_num(0.0, 5.0)
    assert difference(finite, x) == difference(x, finite) == math.inf
    assert difference(x, -x) == math.inf
    assert difference(x, x[:1]) == difference(x, x.double()) == math.inf
    assert difference(x, (x, x)) == math.inf
    assert layout((x, 0.5)) == ((x.shape, x.dtype, x.device, (2, 1)), 0.5)
    assert layout((x.t(), 0.5)) != layout((x, 0.5))  # strides count


def test_replays_checked_against_eager():
    graphs, x = CUDAGraphs(), torch.randn(4, 3)
    replayed = scale_rows(x, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert graphs.checked(scale_rows, (x, 2.0), replayed) is replayed
    assert graphs._eager == set()
    with pytest.warns(UserWarning) as caught:
        out = graphs.checked(scale_rows, (x, 2.0), (2 * x, x.sum(1) + 1e-4))
    # One warning that names the function, the layout and the difference.
    assert len(caught) == 1
    message = str(caught[0].message)
    assert 'scale_rows' in message and 'float32[4, 3], 2.0' in message
    assert 'differs from eager execution by 0.0001' in message
    # Training goes on with the eager numbers; the function stays eager.
    for got, want in zip(out, scale_rows(x, 2.0)):
        assert torch.equal(got, want)
    assert graphs._eager == {scale_rows}


class StaleGraph:
    """A graph that missed its input copy: it replays the result of the
    inputs it was captured with, whatever the new inputs."""

    def __init__(self, fn, args):
        self.result = fn(*args)
        self.checks_left = CHECKED_REPLAYS

    def __call__(self, args):
        return tuple(t.clone() for t in self.result)


def test_a_missed_input_copy_is_caught_on_the_second_replay():
    graphs = CUDAGraphs()
    first, second = torch.randn(4, 3), torch.randn(4, 3)
    graph = StaleGraph(scale_rows, (first, 2.0))
    graphs._graphs[(scale_rows, ) + layout((first, 2.0))] = graph
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the captured inputs replay right
        graphs._replay(graph, scale_rows, (first, 2.0))
    with pytest.warns(UserWarning, match='scale_rows'):
        out = graphs._replay(graph, scale_rows, (second, 2.0))
    torch.testing.assert_close(out[0], 2.0 * second, rtol=0, atol=0)
    # The function's graphs are dropped; no checks are left on this one.
    assert len(graphs) == 0 and graph.checks_left == 0
    assert graphs(scale_rows, second, 3.0)[0].equal(3.0 * second)


def test_capture_budget_and_failed_capture():
    x = torch.randn(2, 2)
    assert CUDAGraphs(max_graphs=0)._capture('key', scale_rows,
                                             (x, 1.0)) is None
    # CPU tensors cannot be captured: the failure is kept and warned once.
    graphs = CUDAGraphs()
    with pytest.warns(UserWarning, match='capturing scale_rows failed'):
        assert graphs._capture('key', scale_rows, (x, 1.0)) is None
    assert graphs._graphs == {'key': None} and len(graphs) == 0
