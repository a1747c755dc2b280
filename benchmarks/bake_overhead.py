"""What BAKE costs: the ensembling solve, and a whole training step.

Prints, in one run:

(a) ``knowledge_ensemble`` (Cholesky solve) against the explicit-inverse
    formula used by public implementations, for growing batch sizes B
    (D = 2048 features, K = 1000 classes), medians over repetitions;
(b) the training-step time (forward + backward + SGD step) of an mmpretrain
    ResNet-50 at 224 px, batch 32, with ``BAKEHead`` against
    ``LinearClsHead`` on the same images in the same process, alternating,
    medians and their ratio.

Examples::

    python benchmarks/bake_overhead.py                      # CPU, both parts
    python benchmarks/bake_overhead.py --device cuda --amp --channels-last
    python benchmarks/bake_overhead.py --skip-step --sizes 64 256 1024

Timings are printed, never asserted; docs/benchmarks.md records them.
"""
import argparse
import json
import platform
import statistics
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

import mmbake  # noqa: F401  (registers BAKEHead)
from mmbake.models import knowledge_ensemble


def explicit_inverse_targets(feats: torch.Tensor, logits: torch.Tensor,
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


def median_time(fn: Callable[[], object], device: torch.device,
                repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn`` over ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
        reps = max(1, repeats if num <= 1024 else repeats // 2)
        ours = median_time(lambda: knowledge_ensemble(feats, logits), device,
                           reps)
        theirs = median_time(
            lambda: explicit_inverse_targets(feats, logits), device, reps)
        diff = (knowledge_ensemble(feats, logits) -
                explicit_inverse_targets(feats, logits)).abs().max().item()
        rows.append(dict(batch=num, ours_ms=ours * 1e3,
                         inverse_ms=theirs * 1e3, ratio=ours / theirs,
                         max_abs_diff=diff))
        print(f'{num:>6} {ours * 1e3:>12.2f} {theirs * 1e3:>13.2f} '
              f'{ours / theirs:>7.3f} {diff:>11.2e}')
    return rows


def build_classifier(head_type: str, device: torch.device,
                     channels_last: bool) -> torch.nn.Module:
    """An mmpretrain ResNet-50 ImageNet classifier with the given head."""
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    head = dict(type=head_type, num_classes=1000, in_channels=2048,
                loss=dict(type='CrossEntropyLoss', loss_weight=1.0))
    if head_type == 'BAKEHead':
        head.update(global_ensemble=False)
    model = MODELS.build(
        dict(type='ImageClassifier',
             backbone=dict(type='ResNet', depth=50),
             neck=dict(type='GlobalAveragePooling'),
             head=head)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def bench_step(device: torch.device, batch: int, size: int, repeats: int,
               amp: bool, channels_last: bool) -> Dict[str, float]:
    """Part (b): step time with BAKEHead vs LinearClsHead, alternating."""
    from mmpretrain.structures import DataSample
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=gen).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    # A class-aware layout: anchor, mate, anchor, mate, ...
    samples = [DataSample().set_gt_label(i // 2).to(device)
               for i in range(batch)]
    models = {name: build_classifier(name, device, channels_last)
              for name in ('LinearClsHead', 'BAKEHead')}
    optims = {name: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
              for name, m in models.items()}
    scaler = torch.amp.GradScaler(device.type, enabled=amp and
                                  device.type == 'cuda')
    amp_dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16

    def step(name: str) -> None:
        model, optim = models[name], optims[name]
        optim.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            losses = model(images, samples, mode='loss')
            loss = sum(losses.values())
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()

    for name in models:  # warm up both (cuDNN autotuning, allocator)
        for _ in range(2):
            step(name)
    times: Dict[str, List[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name in models:
            sync(device)
            start = time.perf_counter()
            step(name)
            sync(device)
            times[name].append(time.perf_counter() - start)
    plain = statistics.median(times['LinearClsHead'])
    bake = statistics.median(times['BAKEHead'])
    print(f'\n(b) ResNet-50 training step, {size}px, batch {batch}, '
          f'amp={amp}, channels_last={channels_last}, {repeats} alternating '
          'repetitions each')
    print(f'LinearClsHead median {plain * 1e3:.1f} ms, BAKEHead median '
          f'{bake * 1e3:.1f} ms, ratio {bake / plain:.4f} '
          f'(overhead {100 * (bake / plain - 1):+.2f} %)')
    return dict(linear_ms=plain * 1e3, bake_ms=bake * 1e3,
                ratio=bake / plain, repeats=repeats, batch=batch, size=size,
                amp=amp, channels_last=channels_last)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--sizes', type=int, nargs='+',
                        default=[64, 128, 256, 512, 1024, 2048, 4096],
                        help='batch sizes B for part (a)')
    parser.add_argument('--ensemble-repeats', type=int, default=5)
    parser.add_argument('--step-repeats', type=int, default=5)
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--amp', action='store_true',
                        help='autocast (fp16 on CUDA, bf16 on CPU)')
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--skip-ensemble', action='store_true')
    parser.add_argument('--skip-step', action='store_true')
    parser.add_argument('--json', help='also write the figures to this file')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    machine = (torch.cuda.get_device_name(device) if device.type == 'cuda'
               else f'{platform.processor() or platform.machine()}, '
               f'{torch.get_num_threads()} threads')
    print(f'torch {torch.__version__}, device {device} ({machine})')
    result = dict(torch=torch.__version__, device=str(device),
                  machine=machine,
                  date=time.strftime('%Y-%m-%d'))
    if not args.skip_ensemble:
        result['ensemble'] = bench_ensemble(args.sizes, device,
                                            args.ensemble_repeats)
    if not args.skip_step:
        result['step'] = bench_step(device, args.batch, args.image_size,
                                    args.step_repeats, args.amp,
                                    args.channels_last)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
