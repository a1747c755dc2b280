"""An optional speed layer: replay small tensor functions from CUDA graphs.

A ResNet-50 step of 32 images is bound by how fast the host launches
kernels, and BAKE adds a few dozen small ones; replayed from a CUDA graph,
each part of it is one launch (docs/benchmarks.md).
"""
import warnings
from typing import Any, Callable, Dict, Hashable, Optional

import torch

# torch.compiler.is_compiling exists from torch 2.3 on.
_is_compiling = getattr(getattr(torch, 'compiler', None), 'is_compiling',
                        lambda: False)


class _Graph:
    """One captured call: its static inputs and (packed) outputs."""

    def __init__(self, fn: Callable, args: tuple) -> None:
        self.args = tuple(a.detach().clone() if torch.is_tensor(a) else a
                          for a in args)
        self.graph = torch.cuda.CUDAGraph()
        device = next(a for a in args if torch.is_tensor(a)).device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # workspaces are created here
            for _ in range(2):
                self._run(fn)
        torch.cuda.current_stream(device).wait_stream(side)
        # 'thread_local': a DataLoader's pin-memory thread may use CUDA
        # meanwhile; only this thread's calls belong to the graph.
        with torch.cuda.graph(self.graph, capture_error_mode='thread_local'):
            self.outputs = self._run(fn)

    def _run(self, fn: Callable) -> tuple:
        out = fn(*self.args)
        self.single = torch.is_tensor(out)
        outs = (out, ) if self.single else tuple(out)
        self.shapes = [o.shape for o in outs]
        # Outputs of one dtype are packed: copying them out is one kernel.
        self.packed = len(outs) > 1 and len({o.dtype for o in outs}) == 1
        return (torch.cat([o.reshape(-1) for o in outs]),
                ) if self.packed else outs

    def __call__(self, args: tuple) -> Any:
        for static, arg in zip(self.args, args):
            if torch.is_tensor(arg):
                static.copy_(arg)
        self.graph.replay()
        # Copies: a later replay must not change what was returned.
        outs = [o.clone() for o in self.outputs]
        if self.packed:
            parts = outs[0].split([shape.numel() for shape in self.shapes])
            outs = [p.view(shape) for p, shape in zip(parts, self.shapes)]
        return outs[0] if self.single else tuple(outs)


class CUDAGraphs:
    """CUDA graphs of pure tensor functions, one per function and layout.

    The layout of a call is derived from its arguments: the shape, dtype,
    device and strides of each tensor, the value of anything else (which
    must be hashable). A function must be capturable: no host
    synchronisation, no collectives, no random numbers. Calls run eagerly
    (same numbers) on CPU tensors, under ``torch.compile``, inside another
    capture, beyond ``max_graphs`` layouts and after a failed capture (one
    warning). Copies and pickles start empty.

    Args:
        max_graphs (int): Most layouts captured. Defaults to 8.
    """

    def __init__(self, max_graphs: int = 8) -> None:
        if not isinstance(max_graphs, int) or max_graphs < 0:
            raise ValueError('max_graphs must be an int >= 0, but got '
                             f'{max_graphs!r}.')
        self.max_graphs = max_graphs
        self._graphs: Dict[Hashable, Optional[_Graph]] = {}

    def __len__(self) -> int:
        return sum(graph is not None for graph in self._graphs.values())

    def __deepcopy__(self, memo: dict) -> 'CUDAGraphs':
        return CUDAGraphs(self.max_graphs)

    def __reduce__(self) -> tuple:
        return CUDAGraphs, (self.max_graphs, )

    @torch.no_grad()
    def __call__(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` without autograd, from a graph where possible."""
        tensors = [a for a in args if torch.is_tensor(a)]
        if not tensors or not all(t.is_cuda for t in tensors) or \
                _is_compiling() or torch.cuda.is_current_stream_capturing():
            return fn(*args)
        key = (fn, ) + tuple((a.shape, a.dtype, a.device, a.stride())
                             if torch.is_tensor(a) else a for a in args)
        if key not in self._graphs:
            if len(self._graphs) >= self.max_graphs:
                return fn(*args)
            try:
                self._graphs[key] = _Graph(fn, args)
            except (RuntimeError, TypeError) as error:  # TypeError: torch<2.1
                self._graphs[key] = None
                warnings.warn(f'CUDAGraphs: capturing {fn.__name__} failed, '
                              f'it runs eagerly for this layout ({error}).')
        graph = self._graphs[key]
        return fn(*args) if graph is None else graph(args)


def run_graphed(graphs: Optional[CUDAGraphs], fn: Callable,
                *args: Any) -> Any:
    """``fn(*args)``, through ``graphs`` unless it is None."""
    return fn(*args) if graphs is None else graphs(fn, *args)


class _KnownGradient(torch.autograd.Function):

    @staticmethod
    def forward(ctx, wrt: torch.Tensor, value: torch.Tensor,
                grad: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad)
        ctx.dtype = wrt.dtype
        return value

    @staticmethod
    def backward(ctx, upstream: torch.Tensor):
        grad, = ctx.saved_tensors
        # One kernel that also casts to the input's dtype.
        out = torch.empty_like(grad, dtype=ctx.dtype)
        return torch.mul(grad, upstream, out=out), None, None


def with_gradient(value: torch.Tensor, wrt: torch.Tensor,
                  grad: torch.Tensor) -> torch.Tensor:
    """``value`` (computed without autograd, e.g. in a graph), joined to
    autograd as one node whose gradient with respect to ``wrt`` is
    ``grad``."""
    return _KnownGradient.apply(wrt, value, grad)
