"""CUDAGraphs off the GPU; its GPU behaviour is in test_gpu.py."""
import copy
import pickle

import pytest
import torch

from mmbake.models.utils.cuda_graphs import CUDAGraphs, run_graphed


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
