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


def double_and_sum(x, y, scale):
    return scale * x, (x + y).sum()


def test_cpu_inputs_run_eagerly_without_capturing():
    graphs = CUDAGraphs()
    x, y = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4)
    doubled, total = graphs(double_and_sum, x, y, 2.0)
    torch.testing.assert_close(doubled, 2 * x.detach())
    torch.testing.assert_close(total, (x + y).sum().detach())
    # No autograd inside, nothing captured.
    assert not doubled.requires_grad and len(graphs) == 0
    # Without graphs, the function itself.
    torch.testing.assert_close(
        run_graphed(None, double_and_sum, x, y, 2.0)[1], total)


def test_copies_and_pickles_are_empty_and_keep_settings():
    graphs = CUDAGraphs(max_graphs=3)
    for clone in (copy.deepcopy(graphs), pickle.loads(pickle.dumps(graphs))):
        assert isinstance(clone, CUDAGraphs) and clone is not graphs
        assert (clone.max_graphs, len(clone)) == (3, 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match='max_graphs must be an int >= 0'):
        CUDAGraphs(max_graphs=-1)


def scale_rows(x, scale):
    return scale * x, x.sum(1)


@pytest.mark.parametrize('out', [
    torch.arange(6.).view(2, 3),
    (torch.ones(2, 3), torch.zeros(4)),
    (torch.ones(2), torch.zeros(3, dtype=torch.int64)),
])
def test_pack_unpack_round_trip(out):
    spec, tensors = pack(out)
    outs = (out, ) if torch.is_tensor(out) else out
    # One dtype: one flat tensor to copy out of a graph.
    joined = len(outs) > 1 and len({o.dtype for o in outs}) == 1
    assert len(tensors) == (1 if joined else len(outs))
    back = unpack(spec, tensors)
    assert type(back) is type(out)
    for got, want in zip((back, ) if torch.is_tensor(back) else back, outs):
        assert torch.equal(got, want)


def test_difference():
    x = torch.tensor([[1.0, float('nan')], [float('inf'), 2.0]])
    assert difference(x, x.clone()) == 0.0
    assert difference((x, x), (x, x + 1e-3)) == pytest.approx(1e-3, rel=1e-4)
    # NaN or infinity where the other has a number, other shapes or dtypes.
    finite = x.nan_to_num(0.0, 5.0)
    assert difference(finite, x) == difference(x, finite) == math.inf
    assert difference(x, -x) == math.inf
    assert difference(x, x[:1]) == difference(x, x.double()) == math.inf
    assert difference(x, (x, x)) == math.inf


def test_layout_of_a_call():
    x = torch.zeros(2, 3)
    assert layout((x, 0.5)) == ((x.shape, x.dtype, x.device, (3, 1)), 0.5)
    assert layout((x.t(), 0.5)) != layout((x, 0.5))  # strides count


def test_a_replay_equal_to_eager_is_kept():
    graphs = CUDAGraphs()
    x = torch.randn(4, 3)
    replayed = scale_rows(x, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert graphs.checked(scale_rows, (x, 2.0), replayed) is replayed
    assert graphs._eager == set()


def test_a_replay_that_differs_from_eager_is_turned_off():
    graphs = CUDAGraphs()
    x = torch.randn(4, 3)
    wrong = (2.0 * x, x.sum(1) + 1e-4)
    with pytest.warns(UserWarning) as caught:
        out = graphs.checked(scale_rows, (x, 2.0), wrong)
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
