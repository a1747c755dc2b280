"""What BAKE costs: the ensembling solve, and a whole training step.

(a) ``knowledge_ensemble`` against the explicit-inverse formula per batch
size B (``--ensemble-repeats`` rounds, x10 up to B = 512, /2 above 1024);
(b) the training-step time of a ResNet-50 with ``BAKEHead`` against
``LinearClsHead``, with ``--simulate-ranks N`` as rank 0 of N ranks whose
ensemble the other ranks' simulated rows join. Timings are printed, never
asserted (docs/benchmarks.md)::

    python benchmarks/bake_overhead.py --device cuda --amp --channels-last
"""
import argparse
import contextlib
import json
import platform
import random
import statistics
import sys
import time
from functools import partial
from typing import Callable, Dict, List
from unittest.mock import patch

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
SIZES = [64, 128, 256, 512, 1024, 2048, 4096]  # part (a)
GOALS = ('(b): paired step-overhead goals in percent with CUDA graphs and '
         'without (verdict lines)')
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


def alternating_times(fns: Dict[str, Callable], device: torch.device,
                      repeats: int, warmup: int) -> Dict[str, List[float]]:
    """Wall-clock seconds of each function over ``repeats`` rounds, each
    round calling every function once in a shuffled order (fixed seed);
    queued kernels are waited for, so that the times are real."""
    sync = partial(torch.cuda.synchronize, device) \
        if device.type == 'cuda' else lambda: None
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    order, names = random.Random(0), list(fns)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            sync()
            start = time.perf_counter()
            fns[name]()
            sync()
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


def simulated_ranks(model: torch.nn.Module, images: Tensor, num_ranks: int):
    """Make the BAKE heads ensemble as rank 0 of ``num_ranks`` ranks: the
    gather returns this rank's rows followed by the unit features and
    softened predictions of the other ranks, this model's on noisy copies
    of the batch."""
    rows = []
    with torch.no_grad():
        for rank in range(1, num_ranks):
            noisy = images + 0.1 * rank * torch.randn_like(images)
            feats = model.extract_feat(noisy)
            rows.append((model.head.pre_logits(feats), model.head(feats)))
    feats, logits = (torch.cat(part).float() for part in zip(*rows))
    others = (F.normalize(feats, dim=1), F.softmax(logits / TEMPERATURE, 1))

    def gather(feats, probs, group_size=None):
        return torch.cat([feats, others[0]]), torch.cat([probs, others[1]]), 0

    return patch.multiple(
        sys.modules['mmbake.models.utils.knowledge_ensemble'],
        ensemble_world_size=lambda group_size=None: num_ranks,
        gather_ensemble_batch=gather)


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

    with simulated_ranks(models['BAKEHead'][0], images, ranks) \
            if ranks > 1 else contextlib.nullcontext():
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
    result.update(
        bake_ms=medians['BAKEHead'] * 1e3, ratio=medians['BAKEHead'] / plain)
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
    add('--sizes', type=int, nargs='+', default=SIZES, help='(a): the B')
    add('--ensemble-repeats', type=int, default=5, help='(a): rounds per B')
    add('--step-repeats', type=int, default=5, help='(b): rounds')
    add('--batch', type=int, default=32, help='(b): images per step')
    add('--image-size', type=int, default=224, help='(b): pixels')
    add('--simulate-ranks', type=int, default=1, help='(b): ranks ensembled')
    add('--goals', type=float, nargs=2, default=[1.0, 5.0], help=GOALS)
    add('--amp', action='store_true', help='autocast (fp16 CUDA, bf16 CPU)')
    for flag in ('--channels-last', '--skip-ensemble', '--skip-step'):
        add(flag, action='store_true')
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
