"""Ranks of the gloo tests of ClassAwareBatchSampler (not a test module).

Usage: python dist_class_aware_worker.py RANK PORT_3 PORT_2 OUT_DIR

Three processes first form a world of 3 (on PORT_3); then ranks 0 and 1
form a new world of 2 (on PORT_2), so both world sizes cost the start-up
of three processes only. In each world the batch sampler is built under
the real process group for several wrapped samplers, every batch is
gathered across ranks the way a global BAKE head does (an unequal number
of batches would hang here), and what the rank saw is written to
``OUT_DIR/world{W}_rank{R}.json`` for the test to check.
"""
import itertools
import json
import os
import os.path as osp
import sys
import traceback

import torch
import torch.distributed as dist


def run(rank: int, world_size: int, out_dir: str) -> None:
    """Build the batch sampler for every case and record what it yields."""
    from label_toys import GtLabelsArray, imbalanced_labels
    from mmengine.dataset import DefaultSampler, InfiniteSampler

    from mmbake.datasets import ClassAwareBatchSampler

    labels = imbalanced_labels(101, 9, seed=world_size)
    dataset = GtLabelsArray(labels)
    cases = {
        'default-images': (DefaultSampler, dict(), 'images'),
        'default-anchors': (DefaultSampler, dict(), 'anchors'),
        'no-round-up-images': (DefaultSampler, dict(round_up=False), 'images'),
        'no-round-up-anchors':
        (DefaultSampler, dict(round_up=False), 'anchors'),
        'infinite': (InfiniteSampler, dict(), 'images'),
    }
    report = {'labels': labels.tolist()}
    for name, (sampler_type, kwargs, epoch_mode) in cases.items():
        # seed=None: the seed comes from mmengine's collective
        # sync_random_seed(), as in a real run.
        sampler = sampler_type(dataset, **kwargs)
        batch_sampler = ClassAwareBatchSampler(
            sampler, batch_size=6, num_instances=3, epoch_mode=epoch_mode)
        sampler.set_epoch(1)
        if sampler_type is InfiniteSampler:
            num = 2 * len(batch_sampler) + 1
            batches = list(itertools.islice(iter(batch_sampler), num))
            # The anchors must continue the sampler's own stream.
            fresh = InfiniteSampler(dataset, seed=sampler.seed)
            wrapped = list(itertools.islice(iter(fresh), num * 2))
        else:
            batches = list(batch_sampler)
            wrapped = list(sampler)
        # What a global head does every iteration: gather equal shapes.
        for batch in batches:
            gathered = [
                torch.empty(6, dtype=torch.int64) for _ in range(world_size)
            ]
            dist.all_gather(gathered, torch.tensor(batch, dtype=torch.int64))
        report[name] = dict(
            len=len(batch_sampler),
            batches=batches,
            wrapped=wrapped,
            seed=batch_sampler.seed,
            num_gathers=len(batches))
    with open(osp.join(out_dir, f'world{world_size}_rank{rank}.json'),
              'w') as f:
        json.dump(report, f)


def run_world(rank: int, world_size: int, port: str, out_dir: str) -> None:
    """Run the checks as ``rank`` of a fresh default group of world_size."""
    dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{port}',
        rank=rank,
        world_size=world_size)
    try:
        run(rank, world_size, out_dir)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main() -> None:
    rank, port_3, port_2, out_dir = (int(sys.argv[1]), sys.argv[2],
                                     sys.argv[3], sys.argv[4])
    code = 0
    try:
        run_world(rank, 3, port_3, out_dir)
        if rank < 2:
            run_world(rank, 2, port_2, out_dir)
    except Exception:  # report, then still leave through os._exit
        traceback.print_exc()
        code = 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        # torch gloo can abort at interpreter exit (docs/stack.md item 5).
        os._exit(code)


if __name__ == '__main__':
    main()
