"""What BAKE costs: the ensembling solve, and a whole training step.

(a) ``knowledge_ensemble`` against the explicit-inverse formula per batch
size; (b) the training-step time of a ResNet-50 with ``BAKEHead`` against
``LinearClsHead``. Timings are printed, never asserted (docs/benchmarks.md)::

    python benchmarks/bake_overhead.py --device cuda --amp --channels-last
"""
import argparse
import contextlib
import importlib
import json
import platform
import random
import statistics
import time
from functools import partial
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

import mmbake  # noqa: F401  (registers BAKEHead)
from mmbake.models import knowledge_ensemble

# Part (b): BAKEHead with CUDA graphs (its default) and without, against the
# plain head and an identical control (the resolution of the measurement).
STEP_HEADS = {
    'LinearClsHead': dict(type='LinearClsHead'),
    'LinearClsHead (control)': dict(type='LinearClsHead'),
    'BAKEHead': dict(type='BAKEHead'),
    'BAKEHead(cuda_graph=False)': dict(type='BAKEHead', cuda_graph=False),
}
OMEGA, TEMPERATURE = 0.5, 4.0  # BAKE's defaults
# Keys of the figures in the JSON.
ENSEMBLE_KEYS = ('batch', 'ours_ms', 'inverse_ms', 'ratio', 'max_abs_diff')
HEAD_KEYS = ('q1_ms', 'median_ms', 'q3_ms', 'ratio', 'paired_overhead')


def explicit_inverse_targets(feats: Tensor, logits: Tensor) -> Tensor:
    """The baseline: the formula with ``torch.inverse``, as often written."""
    with torch.no_grad():
        feats = F.normalize(feats.float(), dim=1)
        probs = F.softmax(logits.float() / TEMPERATURE, dim=1)
        eye = torch.eye(feats.size(0), device=feats.device)
        sim = (feats @ feats.t()).masked_fill(eye.bool(), -1e9)
        affinity = F.softmax(sim, dim=1)
        return (1 - OMEGA) * torch.inverse(eye - OMEGA * affinity) @ probs


def sync(device: torch.device) -> None:
    """Wait for queued kernels so that wall-clock times are real."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def alternating_times(fns: Dict[str, Callable], device: torch.device,
                      repeats: int, warmup: int) -> Dict[str, List[float]]:
    """Wall-clock seconds of each function over ``repeats`` rounds, each
    round calling every function once in a shuffled order (fixed seed)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    order = random.Random(0)
    names = list(fns)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            sync(device)
            start = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def bench_ensemble(device: torch.device, args: argparse.Namespace) -> list:
    """Part (a): solve vs explicit inverse for each batch size."""
    rows = []
    print('\n(a) knowledge_ensemble vs explicit inverse, D=2048, K=1000')
    print(f'{"B":>6} {"ours (ms)":>12} {"inverse (ms)":>13} {"ratio":>7} '
          f'{"max |diff|":>11}')
    repeats = args.ensemble_repeats
    for num in args.sizes:
        gen = torch.Generator().manual_seed(num)
        feats = torch.randn(num, 2048, generator=gen).to(device)
        logits = (3 * torch.randn(num, 1000, generator=gen)).to(device)
        fns = dict(
            ours=partial(knowledge_ensemble, feats, logits),
            theirs=partial(explicit_inverse_targets, feats, logits))
        # Sub-millisecond calls are noisy and cheap: time them 10x as often.
        reps = repeats * 10 if num <= 512 else \
            repeats if num <= 1024 else repeats // 2
        times = alternating_times(fns, device, max(1, reps),
                                  1 if num > 1024 else 2)
        ours, theirs = (statistics.median(times[k]) for k in fns)
        diff = (fns['ours']() - fns['theirs']()).abs().max().item()
        row = (num, ours * 1e3, theirs * 1e3, ours / theirs, diff)
        rows.append(dict(zip(ENSEMBLE_KEYS, row)))
        print('{:>6} {:>12.2f} {:>13.2f} {:>7.3f} {:>11.2e}'.format(*row))
    return rows


@contextlib.contextmanager
def simulated_ranks(num_ranks: int, feats: Tensor, probs: Tensor):
    """Make the BAKE heads ensemble as rank 0 of ``num_ranks`` ranks, the
    gather returning this rank's rows followed by ``feats`` / ``probs``."""
    module = importlib.import_module('mmbake.models.utils.knowledge_ensemble')
    saved = module.ensemble_world_size, module.gather_ensemble_batch

    def gather(own_feats, own_probs, group_size=None):
        return torch.cat([own_feats, feats]), torch.cat([own_probs, probs]), 0

    module.ensemble_world_size = lambda group_size=None: num_ranks
    module.gather_ensemble_batch = gather
    try:
        yield
    finally:
        module.ensemble_world_size, module.gather_ensemble_batch = saved


def other_ranks_rows(model: torch.nn.Module, images: Tensor,
                     num_ranks: int) -> Tuple[Tensor, Tensor]:
    """Unit features and softened predictions of ``num_ranks - 1`` other
    ranks: this model's, on noisy copies of the batch."""
    with torch.no_grad():
        rows = []
        for rank in range(1, num_ranks):
            noisy = images + 0.1 * rank * torch.randn_like(images)
            feats = model.extract_feat(noisy)
            rows.append((model.head.pre_logits(feats), model.head(feats)))
    feats = F.normalize(torch.cat([f for f, _ in rows]).float(), dim=1)
    logits = torch.cat([z for _, z in rows]).float()
    probs = F.softmax(logits / TEMPERATURE, dim=1)
    return feats, probs


def build_classifier(head_cfg: dict, device: torch.device,
                     channels_last: bool) -> torch.nn.Module:
    """An mmpretrain ResNet-50 ImageNet classifier with the given head."""
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    loss = dict(type='CrossEntropyLoss', loss_weight=1.0)
    head = dict(head_cfg, num_classes=1000, in_channels=2048, loss=loss)
    cfg = dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=50))
    cfg.update(neck=dict(type='GlobalAveragePooling'), head=head)
    model = MODELS.build(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def bench_step(device: torch.device, args: argparse.Namespace) -> dict:
    """Part (b): step time with BAKEHead vs LinearClsHead, alternating."""
    from mmpretrain.structures import DataSample
    batch, size, repeats = args.batch, args.image_size, args.step_repeats
    amp, ranks, cuda = args.amp, args.simulate_ranks, device.type == 'cuda'
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=gen).to(device)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    # A class-aware layout: anchor, mate, anchor, mate, ...
    samples = [DataSample().set_gt_label(i // 2) for i in range(batch)]
    samples = [s.to(device) for s in samples]
    models = {}
    for name, cfg in STEP_HEADS.items():
        if cuda or name != 'BAKEHead(cuda_graph=False)':  # graphs: CUDA only
            model = build_classifier(cfg, device, args.channels_last)
            optim = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            scaler = torch.amp.GradScaler(device.type, enabled=amp and cuda)
            models[name] = model, optim, scaler
    amp_dtype = torch.float16 if cuda else torch.bfloat16

    def step(name: str) -> None:
        model, optim, scaler = models[name]
        optim.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            loss = sum(model(images, samples, mode='loss').values())
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()

    simulation = contextlib.nullcontext()
    if ranks > 1:
        rows = other_ranks_rows(models['BAKEHead'][0], images, ranks)
        simulation = simulated_ranks(ranks, *rows)
    with simulation:
        for name in models:  # warm up (cuDNN autotuning, allocator, graphs)
            for _ in range(3):
                step(name)
        fns = {name: partial(step, name) for name in models}
        times = alternating_times(fns, device, repeats, warmup=0)
    medians = {name: statistics.median(t) for name, t in times.items()}
    plain = medians['LinearClsHead']
    print(f'\n(b) ResNet-50 training step, {size}px, batch {batch}, '
          f'amp={amp}, channels_last={args.channels_last}, {repeats} rounds, '
          'models in shuffled order in each round; BAKE ensembles over '
          f'{ranks} x {batch} images')
    result = dict(linear_ms=plain * 1e3, repeats=repeats, batch=batch)
    result.update(size=size, amp=amp, channels_last=args.channels_last)
    result.update(ensembled_images=ranks * batch, heads={})
    # Paired: the median over rounds of (this model - plain model) in the
    # same round, which cancels the drift between rounds.
    print(f'{"head":<28} {"q1 (ms)":>9} {"median":>9} {"q3 (ms)":>9} '
          f'{"ratio":>8} {"overhead":>9} {"paired":>9}')
    base = times['LinearClsHead']
    for name, values in times.items():
        quarts = [v * 1e3 for v in statistics.quantiles(values, n=4)]
        ratio = medians[name] / plain
        paired = statistics.median(v - b for v, b in zip(values, base)) / plain
        print('{:<28} {:>9.2f} {:>9.2f} {:>9.2f} '.format(name, *quarts) +
              f'{ratio:>8.4f} {100 * (ratio - 1):>+8.2f}% '
              f'{100 * paired:>+8.2f}%')
        result['heads'][name] = dict(zip(HEAD_KEYS, quarts + [ratio, paired]))
    result['bake_ms'] = medians['BAKEHead'] * 1e3
    result['ratio'] = medians['BAKEHead'] / plain
    for name, goal in zip(('BAKEHead', 'BAKEHead(cuda_graph=False)'),
                          args.goals):
        if name in result['heads']:
            paired = 100 * result['heads'][name]['paired_overhead']
            print(f'verdict: {name} over {ranks} x {batch} images: '
                  f'paired step overhead {paired:+.2f} % (goal <= {goal} %)'
                  f': {"met" if paired <= goal else "MISSED"}')
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add = parser.add_argument
    add('--device', default='cpu', help='cpu or cuda')
    add('--sizes',
        type=int,
        nargs='+',
        default=[64, 128, 256, 512, 1024, 2048, 4096],
        help='batch sizes B for part (a)')
    add('--ensemble-repeats',
        type=int,
        default=5,
        help='rounds per B in part (a): x10 up to B=512, /2 above B=1024')
    add('--step-repeats', type=int, default=5)
    add('--batch', type=int, default=32)
    add('--image-size', type=int, default=224)
    add('--amp',
        action='store_true',
        help='autocast (fp16 on CUDA, bf16 on CPU)')
    add('--channels-last', action='store_true')
    add('--simulate-ranks',
        type=int,
        default=1,
        help='part (b): BAKE ensembles over this many ranks\' batches, the '
        'other ranks\' rows simulated on this device (1: local)')
    add('--goals',
        type=float,
        nargs=2,
        default=[1.0, 5.0],
        metavar=('GRAPHS', 'EAGER'),
        help='part (b): paired step-overhead goals in percent, CUDA graphs '
        'on and off, printed as verdict lines')
    add('--skip-ensemble', action='store_true')
    add('--skip-step', action='store_true')
    add('--json', help='also write the figures to this file')
    args = parser.parse_args()
    device = torch.device(args.device)
    machine = (
        torch.cuda.get_device_name(device) if device.type == 'cuda' else
        f'{platform.processor() or platform.machine()}, '
        f'{torch.get_num_threads()} threads')
    print(f'torch {torch.__version__}, device {device} ({machine})')
    result = dict(torch=torch.__version__, device=str(device))
    result.update(machine=machine, date=time.strftime('%Y-%m-%d'))
    if not args.skip_ensemble:
        result['ensemble'] = bench_ensemble(device, args)
    if not args.skip_step:
        result['step'] = bench_step(device, args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
