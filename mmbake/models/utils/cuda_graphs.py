"""Replay a small, fixed-shape tensor computation from a CUDA graph.

A ResNet-50 step of 32 images leaves a modern GPU mostly idle: the step is
bound by how fast the host enqueues its kernels, so every extra kernel costs
its launch time (a few microseconds of Python and dispatcher work each),
however little arithmetic it does. The BAKE term is a few dozen such small
kernels. Captured once in a CUDA graph, it is enqueued with one launch.
"""
import warnings
from typing import Callable, Dict, Hashable, Optional, Set, Tuple

import torch

Tensors = Tuple[torch.Tensor, ...]

# torch.compiler.is_compiling exists from torch 2.3 on.
_is_compiling = getattr(getattr(torch, 'compiler', None), 'is_compiling',
                        lambda: False)


class CUDAGraphCache:
    """Run a pure tensor function through one CUDA graph per input layout.

    The first call with a new layout (the shapes, dtypes and device of the
    inputs, plus the caller's ``key``) runs ``fn`` a few times on a side
    stream and captures it; later calls copy the inputs into the graph's
    static buffers, replay the graph and return a fresh copy of its
    outputs, so a returned tensor is never overwritten by a later replay.
    Outputs of one dtype are packed into one buffer inside the graph, so
    that copy is a single kernel; they are returned as views of it.

    ``fn`` must be capturable: CUDA tensors in and out, no host
    synchronisation, no random numbers, no Python branching on tensor
    values, and its result may depend only on the inputs and on what
    ``key`` names (every Python value ``fn`` closes over must be in
    ``key``). It always runs without autograd.

    ``fn`` runs eagerly instead (same result) when an input is not on a
    CUDA device, while the current stream is being captured by someone
    else, under ``torch.compile``, when ``max_graphs`` layouts are held
    already, or when capturing failed for this layout before (one warning).

    The cache holds GPU memory and is never part of a ``state_dict``;
    ``copy.deepcopy`` (e.g. mmengine's EMA model) and pickling give an empty
    cache.

    Args:
        max_graphs (int): Most layouts captured; later new layouts run
            eagerly. Defaults to 8.
        warmup (int): Eager runs on a side stream before each capture
            (library handles and workspaces are created there). Defaults
            to 2.
    """

    def __init__(self, max_graphs: int = 8, warmup: int = 2) -> None:
        if max_graphs < 0:
            raise ValueError(f'max_graphs must be >= 0, but got {max_graphs}.')
        if warmup < 1:
            raise ValueError(f'warmup must be >= 1, but got {warmup}.')
        self.max_graphs = max_graphs
        self.warmup = warmup
        self._graphs: Dict[Hashable, '_Graph'] = {}
        self._failed: Set[Hashable] = set()

    def __len__(self) -> int:
        """Number of captured graphs."""
        return len(self._graphs)

    def __deepcopy__(self, memo: dict) -> 'CUDAGraphCache':
        return CUDAGraphCache(self.max_graphs, self.warmup)

    def __getstate__(self) -> dict:
        return dict(max_graphs=self.max_graphs, warmup=self.warmup)

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def clear(self) -> None:
        """Drop every graph and its memory pool."""
        self._graphs.clear()
        self._failed.clear()

    def __call__(self, fn: Callable[..., Tensors], *inputs: torch.Tensor,
                 key: Hashable = ()) -> Tensors:
        """Compute ``fn(*inputs)``, through a graph where possible.

        Args:
            fn (Callable): A capturable function of tensors returning a
                tuple of tensors.
            *inputs (Tensor): Its arguments.
            key (Hashable): Identifies ``fn`` and the Python values it
                depends on. Defaults to ``()``.

        Returns:
            tuple[Tensor]: ``fn(*inputs)``, freshly allocated.
        """
        entry = None
        if self._may_use_graphs(inputs):
            layout = (key, ) + tuple(
                (t.shape, t.dtype, t.device) for t in inputs)
            entry = self._graphs.get(layout) or self._capture(
                fn, inputs, layout)
        if entry is None:
            with torch.no_grad():
                return fn(*inputs)
        with torch.no_grad():
            for static, tensor in zip(entry.inputs, inputs):
                static.copy_(tensor)
            entry.graph.replay()
            return entry.fresh_outputs()

    @staticmethod
    def _may_use_graphs(inputs: Tensors) -> bool:
        """Whether these inputs may be computed by a (new or old) graph."""
        if not inputs or not all(t.is_cuda for t in inputs):
            return False
        # Under torch.compile, and inside a graph that the user is
        # capturing (no nested capture, no replay into it), run eagerly so
        # that our kernels join theirs.
        return not (_is_compiling()
                    or torch.cuda.is_current_stream_capturing())

    def _capture(self, fn: Callable[..., Tensors], inputs: Tensors,
                 layout: Hashable) -> Optional['_Graph']:
        """Warm up and capture ``fn`` for one layout; None if not allowed."""
        if layout in self._failed or len(self._graphs) >= self.max_graphs:
            return None
        device = inputs[0].device
        static_inputs = tuple(t.detach().clone() for t in inputs)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.no_grad():
                side = torch.cuda.Stream(device)
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):
                    for _ in range(self.warmup):
                        _Graph.pack(fn(*static_inputs))
                torch.cuda.current_stream(device).wait_stream(side)
                # 'thread_local': a DataLoader's pin-memory thread may use
                # CUDA while we capture; only this thread's calls matter.
                with torch.cuda.graph(graph,
                                      capture_error_mode='thread_local'):
                    packed, shapes = _Graph.pack(fn(*static_inputs))
        except (RuntimeError, TypeError) as error:  # TypeError: torch < 2.1
            self._failed.add(layout)
            warnings.warn(
                'CUDAGraphCache: capturing failed, so this computation runs '
                f'eagerly for inputs of shapes '
                f'{[tuple(t.shape) for t in inputs]} ({error}).')
            return None
        entry = _Graph(graph, static_inputs, packed, shapes)
        self._graphs[layout] = entry
        return entry


class _Graph:
    """A captured graph, its static inputs and its packed outputs.

    Args:
        graph (CUDAGraph): The captured graph.
        inputs (tuple[Tensor]): The static inputs it reads.
        packed (tuple[Tensor]): One flat buffer per output dtype (or the
            output itself when it is alone in its dtype).
        shapes (list): For each output, ``(buffer index, shape, strides,
            start)`` within the buffers.
    """

    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: Tensors,
                 packed: Tensors, shapes: list) -> None:
        self.graph = graph
        self.inputs = inputs
        self.packed = packed
        self.shapes = shapes

    @staticmethod
    def pack(outputs: Tensors) -> Tuple[Tensors, list]:
        """Concatenate the outputs of each dtype into one flat buffer."""
        groups: Dict[torch.dtype, list] = {}
        for out in outputs:
            groups.setdefault(out.dtype, []).append(out)
        order = list(groups)
        packed, starts, shapes = [], {}, []
        for dtype in order:
            tensors = groups[dtype]
            packed.append(tensors[0].contiguous() if len(tensors) == 1 else
                          torch.cat([t.reshape(-1) for t in tensors]))
            starts[dtype] = 0
        for out in outputs:
            # Contiguous strides of the output's shape.
            strides = torch.empty(out.shape, device='meta').stride()
            shapes.append((order.index(out.dtype), out.shape, strides,
                           starts[out.dtype]))
            starts[out.dtype] += out.numel()
        return tuple(packed), shapes

    def fresh_outputs(self) -> Tensors:
        """Copies of the outputs of the last replay (one kernel per dtype)."""
        buffers = [buf.clone() for buf in self.packed]
        return tuple(buffers[index].as_strided(shape, strides, start)
                     for index, shape, strides, start in self.shapes)
