"""What BAKE costs: the ensembling solve, and a whole training step.

Prints, in one run:

(a) ``knowledge_ensemble`` (Cholesky solve) against the explicit-inverse
    formula used by public implementations, for growing batch sizes B
    (D = 2048 features, K = 1000 classes), medians over repetitions;
(b) the training-step time (forward + backward + SGD step) of an mmpretrain
    ResNet-50 at 224 px, batch 32, with ``BAKEHead`` (CUDA graphs on and
    off) against ``LinearClsHead`` and an identical control model, on the
    same images in the same process, in a shuffled order each round:
    medians, quartiles and the paired per-round overhead. With
    ``--simulate-ranks N`` the BAKE heads also ensemble over a gathered
    batch of N x 32 images, as each rank of the ``8xb32`` recipe does:
    the other ranks' rows are fixed features and predictions of a first
    forward pass, handed in where the gather would be (no communication).

Examples::

    python benchmarks/bake_overhead.py                      # CPU, both parts
    python benchmarks/bake_overhead.py --device cuda --amp --channels-last
    python benchmarks/bake_overhead.py --device cuda --amp --channels-last \
        --skip-ensemble --simulate-ranks 8
    python benchmarks/bake_overhead.py --skip-step --sizes 64 256 1024

Timings are printed, never asserted; docs/benchmarks.md records them.
"""
import argparse
import contextlib
import importlib
import json
import platform
import random
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

import mmbake  # noqa: F401  (registers BAKEHead)
from mmbake.models import knowledge_ensemble


def explicit_inverse_targets(feats: torch.Tensor,
                             logits: torch.Tensor,
                             omega: float = 0.5,
                             temperature: float = 4.0) -> torch.Tensor:
    """The baseline: the formula with ``torch.inverse``, as often written."""
    with torch.no_grad():
        feats = F.normalize(feats.float(), dim=1)
        probs = F.softmax(logits.float() / temperature, dim=1)
        num = feats.size(0)
        eye = torch.eye(num, device=feats.device)
        sim = (feats @ feats.t()).masked_fill(eye.bool(), -1e9)
        affinity = F.softmax(sim, dim=1)
        return (1 - omega) * torch.inverse(eye - omega * affinity) @ probs


def sync(device: torch.device) -> None:
    """Wait for queued kernels so that wall-clock times are real."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def alternating_times(fns: Dict[str, Callable[[], object]],
                      device: torch.device,
                      repeats: int,
                      warmup: int = 2) -> Dict[str, List[float]]:
    """Wall-clock seconds of each function over ``repeats`` rounds.

    Every round calls each candidate once, in a shuffled order (fixed
    seed), so that all of them see the same machine state (clocks, caches,
    other jobs) and none always runs first or after the same neighbour.
    """
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


def quartiles(values: List[float]) -> Tuple[float, float, float]:
    """First quartile, median and third quartile."""
    first, median, third = statistics.quantiles(values, n=4)
    return first, median, third


def bench_ensemble(sizes: List[int], device: torch.device,
                   repeats: int) -> List[Dict[str, float]]:
    """Part (a): solve vs explicit inverse for each batch size."""
    rows = []
    print('\n(a) knowledge_ensemble vs explicit inverse, D=2048, K=1000')
    print(f'{"B":>6} {"ours (ms)":>12} {"inverse (ms)":>13} {"ratio":>7} '
          f'{"max |diff|":>11}')
    for num in sizes:
        gen = torch.Generator().manual_seed(num)
        feats = torch.randn(num, 2048, generator=gen).to(device)
        logits = (3 * torch.randn(num, 1000, generator=gen)).to(device)
        # Sub-millisecond calls are noisy and cheap: time them 10x as often.
        reps = max(
            1, repeats *
            10 if num <= 512 else repeats if num <= 1024 else repeats // 2)
        times = alternating_times(
            dict(
                ours=lambda: knowledge_ensemble(feats, logits),
                theirs=lambda: explicit_inverse_targets(feats, logits)),
            device,
            reps,
            warmup=1 if num > 1024 else 2)
        ours, theirs = (statistics.median(times['ours']),
                        statistics.median(times['theirs']))
        diff = (knowledge_ensemble(feats, logits) -
                explicit_inverse_targets(feats, logits)).abs().max().item()
        rows.append(
            dict(
                batch=num,
                ours_ms=ours * 1e3,
                inverse_ms=theirs * 1e3,
                ratio=ours / theirs,
                max_abs_diff=diff))
        print(f'{num:>6} {ours * 1e3:>12.2f} {theirs * 1e3:>13.2f} '
              f'{ours / theirs:>7.3f} {diff:>11.2e}')
    return rows


# The heads compared in part (b): BAKEHead as configured by default (CUDA
# graphs on) and with its term run eagerly, against the plain head.
# A second, identical plain model shows how far two equal models differ in
# the same run: the resolution of the measurement.
STEP_HEADS = {
    'LinearClsHead': dict(type='LinearClsHead'),
    'LinearClsHead (control)': dict(type='LinearClsHead'),
    'BAKEHead': dict(type='BAKEHead'),
    'BAKEHead(cuda_graph=False)': dict(type='BAKEHead', cuda_graph=False),
}


@contextlib.contextmanager
def simulated_ranks(num_ranks: int, feats: torch.Tensor, probs: torch.Tensor):
    """Make the BAKE heads ensemble as rank 0 of ``num_ranks`` ranks.

    ``knowledge_ensemble`` then takes its global path (graphs before and
    after the gather) and the gather returns this rank's rows followed by
    ``feats`` / ``probs``, the rows of the other ``num_ranks - 1`` ranks.
    """
    module = importlib.import_module('mmbake.models.utils.knowledge_ensemble')
    saved = module.ensemble_world_size, module.gather_ensemble_batch

    def gather(own_feats, own_probs, group_size=None):
        return (torch.cat([own_feats, feats]), torch.cat([own_probs,
                                                          probs]), 0)

    module.ensemble_world_size = lambda group_size=None: num_ranks
    module.gather_ensemble_batch = gather
    try:
        yield
    finally:
        module.ensemble_world_size, module.gather_ensemble_batch = saved


def other_ranks_rows(model: torch.nn.Module, images: torch.Tensor,
                     num_ranks: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Unit features and softened predictions standing in for the rows of
    ``num_ranks - 1`` other ranks: this model's, on noisy copies of the
    batch."""
    with torch.no_grad():
        rows = []
        for rank in range(1, num_ranks):
            noisy = images + 0.1 * rank * torch.randn_like(images)
            feats = model.extract_feat(noisy)
            rows.append((model.head.pre_logits(feats), model.head(feats)))
    feats = F.normalize(torch.cat([f for f, _ in rows]).float(), dim=1)
    probs = F.softmax(torch.cat([z for _, z in rows]).float() / 4.0, dim=1)
    return feats, probs


def build_classifier(head_cfg: dict, device: torch.device,
                     channels_last: bool) -> torch.nn.Module:
    """An mmpretrain ResNet-50 ImageNet classifier with the given head."""
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    head = dict(
        head_cfg,
        num_classes=1000,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0))
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='ResNet', depth=50),
            neck=dict(type='GlobalAveragePooling'),
            head=head)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def bench_step(
    device: torch.device,
    batch: int,
    size: int,
    repeats: int,
    amp: bool,
    channels_last: bool,
    simulate_ranks: int = 1,
    goals: Tuple[float, float] = (1.0, 5.0)
) -> Dict[str, float]:
    """Part (b): step time with BAKEHead vs LinearClsHead, alternating."""
    from mmpretrain.structures import DataSample
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=gen).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    # A class-aware layout: anchor, mate, anchor, mate, ...
    samples = [
        DataSample().set_gt_label(i // 2).to(device) for i in range(batch)
    ]
    heads = dict(STEP_HEADS)
    if device.type != 'cuda':  # the graphs are CUDA-only
        heads.pop('BAKEHead(cuda_graph=False)')
    models = {
        name: build_classifier(cfg, device, channels_last)
        for name, cfg in heads.items()
    }
    optims = {
        name: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
        for name, m in models.items()
    }
    scalers = {
        name:
        torch.amp.GradScaler(
            device.type, enabled=amp and device.type == 'cuda')
        for name in models
    }
    amp_dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16

    ranks = contextlib.nullcontext()
    if simulate_ranks > 1:
        ranks = simulated_ranks(
            simulate_ranks,
            *other_ranks_rows(models['BAKEHead'], images, simulate_ranks))

    def step(name: str) -> None:
        model, optim, scaler = models[name], optims[name], scalers[name]
        optim.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            losses = model(images, samples, mode='loss')
            loss = sum(losses.values())
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()

    with ranks:
        for name in models:  # warm up (cuDNN autotuning, allocator, graphs)
            for _ in range(3):
                step(name)
        times = alternating_times(
            {name: (lambda name=name: step(name))
             for name in models},
            device,
            repeats,
            warmup=0)
    medians = {name: statistics.median(t) for name, t in times.items()}
    plain = medians['LinearClsHead']
    print(f'\n(b) ResNet-50 training step, {size}px, batch {batch}, '
          f'amp={amp}, channels_last={channels_last}, {repeats} rounds, '
          'models in shuffled order in each round; BAKE ensembles over '
          f'{simulate_ranks} x {batch} images')
    result = dict(
        linear_ms=plain * 1e3,
        repeats=repeats,
        batch=batch,
        size=size,
        amp=amp,
        channels_last=channels_last,
        ensembled_images=simulate_ranks * batch,
        heads={})
    # Paired: the median over rounds of (this model - plain model) in the
    # same round, which cancels the drift between rounds.
    print(f'{"head":<28} {"q1 (ms)":>9} {"median":>9} {"q3 (ms)":>9} '
          f'{"ratio":>8} {"overhead":>9} {"paired":>9}')
    for name, values in times.items():
        first, median, third = (v * 1e3 for v in quartiles(values))
        ratio = medians[name] / plain
        paired = statistics.median(
            mine - base
            for mine, base in zip(values, times['LinearClsHead'])) / plain
        print(f'{name:<28} {first:>9.2f} {median:>9.2f} {third:>9.2f} '
              f'{ratio:>8.4f} {100 * (ratio - 1):>+8.2f}% '
              f'{100 * paired:>+8.2f}%')
        result['heads'][name] = dict(
            q1_ms=first,
            median_ms=median,
            q3_ms=third,
            ratio=ratio,
            paired_overhead=paired)
    result['bake_ms'] = medians['BAKEHead'] * 1e3
    result['ratio'] = medians['BAKEHead'] / plain
    for name, goal in zip(('BAKEHead', 'BAKEHead(cuda_graph=False)'), goals):
        if name in result['heads']:
            paired = 100 * result['heads'][name]['paired_overhead']
            print(f'verdict: {name} over {simulate_ranks} x {batch} images: '
                  f'paired step overhead {paired:+.2f} % (goal <= {goal} %)'
                  f': {"met" if paired <= goal else "MISSED"}')
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument(
        '--sizes',
        type=int,
        nargs='+',
        default=[64, 128, 256, 512, 1024, 2048, 4096],
        help='batch sizes B for part (a)')
    parser.add_argument(
        '--ensemble-repeats',
        type=int,
        default=5,
        help='rounds per B in part (a): x10 up to B=512, /2 above B=1024')
    parser.add_argument('--step-repeats', type=int, default=5)
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument(
        '--amp',
        action='store_true',
        help='autocast (fp16 on CUDA, bf16 on CPU)')
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument(
        '--simulate-ranks',
        type=int,
        default=1,
        help='part (b): BAKE ensembles over this many ranks\' batches, the '
        'other ranks\' rows simulated on this device (default 1: local)')
    parser.add_argument(
        '--goals',
        type=float,
        nargs=2,
        default=[1.0, 5.0],
        metavar=('GRAPHS', 'EAGER'),
        help='part (b): paired step-overhead goals in percent, CUDA graphs '
        'on and off, printed as verdict lines (default 1 5)')
    parser.add_argument('--skip-ensemble', action='store_true')
    parser.add_argument('--skip-step', action='store_true')
    parser.add_argument('--json', help='also write the figures to this file')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    machine = (
        torch.cuda.get_device_name(device) if device.type == 'cuda' else
        f'{platform.processor() or platform.machine()}, '
        f'{torch.get_num_threads()} threads')
    print(f'torch {torch.__version__}, device {device} ({machine})')
    result = dict(
        torch=torch.__version__,
        device=str(device),
        machine=machine,
        date=time.strftime('%Y-%m-%d'))
    if not args.skip_ensemble:
        result['ensemble'] = bench_ensemble(args.sizes, device,
                                            args.ensemble_repeats)
    if not args.skip_step:
        result['step'] = bench_step(device, args.batch, args.image_size,
                                    args.step_repeats, args.amp,
                                    args.channels_last, args.simulate_ranks,
                                    tuple(args.goals))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
