"""Run a function in real torch.distributed (gloo) worker processes,
forked from a server that imported mmbake, ended by
``destroy_process_group()`` and ``os._exit(0)`` (on torch 2.13/2.14 a plain
exit aborts about one gloo run in 40: docs/compatibility.md), with a hard
timeout, so that a hang fails the test instead of stalling CI."""
import io
import os
import queue as queue_module
import socket
import traceback
from typing import Any, Callable, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """Return a TCP port that is free on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple,
            queue, backend: str) -> None:
    # Gloo ranks on a CUDA machine may outnumber its GPUs (two ranks share
    # one): LOCAL_RANK must still name a visible device, since mmengine's
    # logger indexes CUDA_VISIBLE_DEVICES with it (IndexError otherwise).
    local_rank = rank
    if backend == 'gloo' and torch.cuda.is_available():
        local_rank = rank % torch.cuda.device_count()
    os.environ.update(
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(local_rank))
    try:
        if backend == 'nccl':
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, rank=rank, world_size=world_size)
        # Tensors sent through a torch.multiprocessing queue live in shared
        # memory owned by the sender, which exits at once: send bytes.
        buffer = io.BytesIO()
        torch.save(fn(rank, world_size, *args), buffer)
        queue.put((rank, 'ok', buffer.getvalue()))
    except BaseException:  # noqa: B902 - report every failure to the parent
        queue.put((rank, 'error', traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        # put() hands the result to a feeder thread; flush it before the
        # hard exit, or the parent may read a truncated message.
        queue.close()
        queue.join_thread()
        os._exit(0)


def run_distributed(fn: Callable,
                    world_size: int,
                    *args,
                    timeout: float = 120.0,
                    backend: str = 'gloo') -> List[Any]:
    """The values of ``fn(rank, world_size, *args)`` (``fn`` and ``args``
    picklable) on ``world_size`` ranks, by rank, over ``backend`` (gloo, or
    nccl with one GPU per rank); AssertionError if a worker failed or the
    run took over ``timeout`` seconds (the workers are then killed)."""
    # Each rank is forked from one clean server process that has imported
    # torch and mmbake once (about 4 s); spawn would import them per rank.
    ctx = mp.get_context('forkserver')
    ctx.set_forkserver_preload(['mmbake'])
    queue = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_worker,
            args=(rank, world_size, port, fn, args, queue, backend))
        for rank in range(world_size)
    ]
    for proc in procs:
        proc.start()
    results, errors = {}, []
    try:
        for _ in range(world_size):
            rank, status, value = queue.get(timeout=timeout)
            if status == 'ok':
                results[rank] = torch.load(
                    io.BytesIO(value), weights_only=True)
            else:
                errors.append(f'rank {rank}:\n{value}')
    except queue_module.Empty as exc:
        raise AssertionError(
            f'distributed run did not finish within {timeout} s '
            f'(finished ranks: {sorted(results)}; errors: {errors})') from exc
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    assert not errors, '\n'.join(errors)
    assert all(proc.exitcode == 0 for proc in procs), \
        [proc.exitcode for proc in procs]
    return [results[rank] for rank in range(world_size)]
