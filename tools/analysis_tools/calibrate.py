"""Fit one temperature on held-out images and fold it into the final layer.

    python tools/analysis_tools/calibrate.py CONFIG CHECKPOINT --out OUT

fits ``T`` minimising the negative log-likelihood of the ``val_dataloader``
images (a held-out split) and writes ``OUT``: the final linear layer divided
by ``T`` (same keys and classes), ``meta['calibration']`` with ``T``, the
images and the printed NLL, ECE, confidence gap and top-1 before and after.
Bad input (a head whose logits are not that layer's, too few images, no
finite ``T``): one ``error:`` line, exit status 2, nothing written.
"""
import argparse
import math
import os.path as osp
import sys
from typing import Any, Dict, List, Optional, Tuple

from mmengine.config import Config

# tools/mmbake_tools: this script's folder is on sys.path, tools/ is not.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmbake_tools.cli import (  # noqa: E402 isort: skip
    apply_cfg_options, errors_as_one_line, new_parser, parse_checked, say)

LOADER = 'val_dataloader'
# Fewer held-out images than this give a temperature too noisy to ship.
MIN_IMAGES = 100
# Tolerance of folded logits == logits / T (float32 rounding of weights / T).
FOLD_RTOL = 1e-4


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line; bad input exits with status 2."""
    parser = new_parser(__doc__.splitlines()[0], 'checkpoint file')
    parser.add_argument(
        '--out', required=True, help='the calibrated checkpoint to write')
    parser.add_argument(
        '--device', help='e.g. cpu, cuda:0 (default: cuda if available)')
    parser.add_argument(
        '--num-bins', type=int, default=15, help='ECE bins (default 15)')
    args = parse_checked(parser, argv)
    if osp.exists(args.out):
        parser.error(f'--out {args.out} exists; give a new path (the tool '
                     'never overwrites a file)')
    if args.num_bins < 1:
        parser.error(f'--num-bins must be >= 1, got {args.num_bins}')
    return args


def predict(model: Any, loader: Any) -> Tuple:
    """Logits (float32, CPU) and labels of every image of ``loader``."""
    import torch

    logits, labels = [], []
    with torch.no_grad():
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            logits.append(model(data['inputs'], mode='tensor').float().cpu())
            for sample in data['data_samples']:
                if sample.gt_label.numel() != 1:
                    raise ValueError(
                        f'{LOADER}: temperature scaling needs one label per '
                        f'image, got {sample.gt_label.numel()}')
                labels.append(int(sample.gt_label))
    return torch.cat(logits), torch.tensor(labels)


def calibrate(args: argparse.Namespace, cfg: Config) -> Dict[str, Any]:
    """Fit, fold and check; return the checkpoint to write."""
    import torch
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmpretrain.apis import get_model

    from mmbake.engine.hooks.check_labels_hook import check_labels_fit
    from mmbake.evaluation import (Calibration, final_linear, fit_temperature,
                                   fold_temperature)
    from mmbake.models import final_layer_of
    from mmbake.utils import load_checkpoint_weights_only

    def metrics(logits: Any) -> Dict[str, float]:
        """NLL, ECE, confidence gap and top-1 of ``softmax(logits)``."""
        scores = logits.double().softmax(dim=1)
        top1 = 100.0 * float((scores.argmax(1) == labels).double().mean())
        return dict(
            Calibration.calculate(scores, labels, args.num_bins), top1=top1)

    checkpoint = load_checkpoint_weights_only(args.checkpoint)
    state_dict = dict(checkpoint.get('state_dict', checkpoint))
    meta = dict(checkpoint.get('meta') or {}) if 'state_dict' in \
        checkpoint else {}
    if 'calibration' in meta:
        raise ValueError(
            f'{args.checkpoint} is calibrated already (temperature '
            f'{meta["calibration"].get("temperature")}); calibrate the '
            'original checkpoint')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    init_default_scope(cfg.get('default_scope', None) or 'mmpretrain')
    model = get_model(cfg, device=device)
    model.load_state_dict(state_dict)
    loader = Runner.build_dataloader(cfg[LOADER])
    check_labels_fit(model, loader.dataset, LOADER)
    layer = final_layer_of(model.head)
    linear = final_linear(layer)
    ids = {id(linear.weight), id(linear.bias)}
    changed = [n for n, p in model.named_parameters() if id(p) in ids]
    logits, labels = predict(model, loader)
    if len(labels) < MIN_IMAGES:
        raise ValueError(
            f'{LOADER} has {len(labels)} images, too few to fit a '
            f'temperature on (at least {MIN_IMAGES})')
    temperature = fit_temperature(logits, labels)
    fold_temperature(layer, temperature)
    folded, expected = predict(model, loader)[0], logits / temperature
    atol = FOLD_RTOL * float(expected.abs().max())
    if not torch.allclose(folded, expected, rtol=FOLD_RTOL, atol=atol):
        raise ValueError(
            f'the logits of {type(model.head).__name__} are not the output '
            f'of its final linear layer ({changed[0][:-len(".weight")]}): '
            'dividing that layer by T does not divide them by T')
    fit = dict(
        temperature=temperature,
        changed=changed,
        checkpoint=osp.basename(args.checkpoint),
        config=args.config,
        dataloader=LOADER,
        dataset=cfg[LOADER].dataset.to_dict(),
        num_images=len(labels),
        num_bins=args.num_bins,
        predictions_unchanged=int(
            (folded.argmax(1) == logits.argmax(1)).sum()),
        before=metrics(logits),
        after=metrics(folded))
    if not all(math.isfinite(value) for value in fit['after'].values()):
        raise ValueError(f'non-finite metrics after scaling by T = '
                         f'{temperature}: {fit["after"]}')
    state_dict.update({
        n: (state_dict[n] / temperature).to(state_dict[n].dtype)
        for n in changed
    })
    return dict(state_dict=state_dict, meta=dict(meta, calibration=fit))


def main(argv: Optional[List[str]] = None) -> None:
    """Calibrate from the command line; print T and the metrics."""
    args = parse_args(argv)
    import torch

    from mmbake.utils import write_atomically  # registers mmbake's types

    cfg = apply_cfg_options(Config.fromfile(args.config), args, (LOADER, ))
    with errors_as_one_line():
        checkpoint = calibrate(args, cfg)
    write_atomically(lambda f: torch.save(checkpoint, f), args.out)
    fit = checkpoint['meta']['calibration']
    say(f'Fitted on {fit["num_images"]} images of {LOADER}: '
        f'temperature T = {fit["temperature"]:.4f}')
    say(f'{"":14}{"NLL":>8}{"ECE (%)":>10}{"gap (points)":>14}'
        f'{"top-1 (%)":>11}')
    for when in ('before', 'after'):
        m = fit[when]
        say(f'{when:14}{m["nll"]:8.4f}{m["ece"]:10.2f}'
            f'{m["confidence_gap"]:+14.2f}{m["top1"]:11.2f}')
    say(f'Same top-1 class for {fit["predictions_unchanged"]} of '
        f'{fit["num_images"]} images; wrote {args.out} '
        f'({", ".join(fit["changed"])} divided by T)')


if __name__ == '__main__':
    main()
