"""An optional speed layer: replay small tensor functions from CUDA graphs.

A ResNet-50 step of 32 images is bound by how fast the host launches
kernels, and BAKE adds a few dozen small ones; replayed from a CUDA graph,
each part of it is one launch (docs/benchmarks.md). The first replays of
every graph are checked against eager execution, so a graph can cost speed
but never correctness.
"""
import math
import warnings
from typing import Any, Callable, Dict, Hashable, Optional, Set, Tuple

import torch

# torch.compiler.is_compiling exists from torch 2.3 on.
_is_compiling = getattr(
    getattr(torch, 'compiler', None), 'is_compiling', lambda: False)

# Replays of each graph compared with eager execution: the first shows a
# wrong capture, the second (new inputs) an input the graph does not copy.
CHECKED_REPLAYS = 2
# Largest difference from eager execution that a replay may show.
REPLAY_TOLERANCE = 1e-5


def layout(args: tuple) -> tuple:
    """What a graph is captured for: shape, dtype, device and strides of
    each tensor argument, the value of any other (hashable) argument."""
    return tuple(
        (a.shape, a.dtype, a.device, a.stride()) if torch.is_tensor(a) else a
        for a in args)


def pack(out: Any) -> Tuple[tuple, tuple]:
    """``(spec, tensors)``: a function's result as graph outputs, several
    of one dtype joined into one flat tensor (one copy out of the graph);
    :func:`unpack` undoes it."""
    outs = (out, ) if torch.is_tensor(out) else tuple(out)
    joined = len(outs) > 1 and len({o.dtype for o in outs}) == 1
    spec = (torch.is_tensor(out), joined, tuple(o.shape for o in outs))
    if joined:
        outs = (torch.cat([o.reshape(-1) for o in outs]), )
    return spec, outs


def unpack(spec: tuple, tensors: tuple) -> Any:
    """The result :func:`pack` made ``tensors`` from."""
    single, joined, shapes = spec
    if joined:
        parts = tensors[0].split([math.prod(shape) for shape in shapes])
        tensors = tuple(p.view(shape) for p, shape in zip(parts, shapes))
    return tensors[0] if single else tensors


def difference(result: Any, expected: Any) -> float:
    """Largest absolute difference between two results of one function:
    infinite for other shapes or dtypes, or NaN or infinities where the
    other result does not hold the same."""
    results, expecteds = pack(result)[1], pack(expected)[1]
    if [(t.shape, t.dtype) for t in results] != \
            [(t.shape, t.dtype) for t in expecteds]:
        return math.inf
    largest = 0.0
    for got, want in zip(results, expecteds):
        got, want = got.double(), want.double()
        if not torch.equal(torch.isfinite(got), torch.isfinite(want)):
            return math.inf
        finite = torch.isfinite(want)
        if not torch.equal(got[~finite].nan_to_num(),
                           want[~finite].nan_to_num()):
            return math.inf
        if finite.any():
            largest = max(largest,
                          (got[finite] - want[finite]).abs().max().item())
    return largest


class _Graph:
    """One captured call: its static inputs and outputs (CUDA only)."""

    def __init__(self, fn: Callable, args: tuple) -> None:
        self.args = tuple(a.detach().clone() if torch.is_tensor(a) else a
                          for a in args)
        self.checks_left = CHECKED_REPLAYS
        self.graph = torch.cuda.CUDAGraph()
        device = next(a for a in args if torch.is_tensor(a)).device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # workspaces are created here
            for _ in range(2):
                fn(*self.args)
        torch.cuda.current_stream(device).wait_stream(side)
        # 'thread_local': a DataLoader's pin-memory thread may use CUDA
        # meanwhile; only this thread's calls belong to the graph.
        with torch.cuda.graph(self.graph, capture_error_mode='thread_local'):
            self.spec, self.outputs = pack(fn(*self.args))

    def __call__(self, args: tuple) -> Any:
        for static, arg in zip(self.args, args):
            if torch.is_tensor(arg):
                static.copy_(arg)
        self.graph.replay()
        # Copies: a later replay must not change what was returned.
        return unpack(self.spec, tuple(o.clone() for o in self.outputs))


class CUDAGraphs:
    """CUDA graphs of pure tensor functions, one per function and layout.

    The layout of a call is derived from its arguments (:func:`layout`). A
    function must be capturable: no host synchronisation, no collectives,
    no random numbers. Calls run eagerly (same numbers) on CPU tensors,
    under ``torch.compile``, inside another capture, beyond ``max_graphs``
    layouts and after a failed capture (one warning). The first
    ``CHECKED_REPLAYS`` replays of each graph are compared with eager runs
    (:meth:`checked`). Copies and pickles start empty.

    Args:
        max_graphs (int): Most layouts captured. Defaults to 8.
    """

    def __init__(self, max_graphs: int = 8) -> None:
        if not isinstance(max_graphs, int) or max_graphs < 0:
            raise ValueError('max_graphs must be an int >= 0, but got '
                             f'{max_graphs!r}.')
        self.max_graphs = max_graphs
        self._graphs: Dict[Hashable, Optional[_Graph]] = {}
        self._eager: Set[Callable] = set()

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
        if fn in self._eager or not tensors or \
                not all(t.is_cuda for t in tensors) or _is_compiling() or \
                torch.cuda.is_current_stream_capturing():
            return fn(*args)
        key = (fn, ) + layout(args)
        graph = self._graphs[key] if key in self._graphs else \
            self._capture(key, fn, args)
        return fn(*args) if graph is None else self._replay(graph, fn, args)

    def _capture(self, key: Hashable, fn: Callable,
                 args: tuple) -> Optional[_Graph]:
        """A new graph for ``key``; None (eager) beyond budget or failed."""
        if len(self._graphs) >= self.max_graphs:
            return None
        try:
            self._graphs[key] = _Graph(fn, args)
        except (RuntimeError, TypeError) as error:  # TypeError: torch<2.1
            self._graphs[key] = None
            warnings.warn(f'CUDAGraphs: capturing {fn.__name__} failed, it '
                          f'runs eagerly for this layout ({error}).')
        return self._graphs[key]

    def _replay(self, graph: Callable, fn: Callable, args: tuple) -> Any:
        """Replay ``graph``; while it has checks left, against eager."""
        result = graph(args)
        if graph.checks_left > 0:
            graph.checks_left -= 1
            result = self.checked(fn, args, result)
        return result

    def checked(self, fn: Callable, args: tuple, replayed: Any) -> Any:
        """``replayed`` (what the graph of ``fn`` returned for ``args``) if
        it is within ``REPLAY_TOLERANCE`` of ``fn(*args)`` run eagerly; else
        the eager result, after turning the graphs of ``fn`` off with one
        warning."""
        eager = fn(*args)
        diff = difference(replayed, eager)
        if diff <= REPLAY_TOLERANCE:
            return replayed
        self._eager.add(fn)
        for key in self._graphs:
            if key[0] is fn:
                self._graphs[key] = None
        inputs = ', '.join(f'{str(a.dtype)[6:]}{list(a.shape)}' if torch.
                           is_tensor(a) else repr(a) for a in args)
        warnings.warn(
            f'CUDAGraphs: a replay of {fn.__name__} differs from eager '
            f'execution by {diff:.3g} (tolerance {REPLAY_TOLERANCE}) for '
            f'the layout ({inputs}); {fn.__name__} runs eagerly from now '
            'on.')
        return eager


def run_graphed(graphs: Optional[CUDAGraphs], fn: Callable, *args: Any) -> Any:
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
