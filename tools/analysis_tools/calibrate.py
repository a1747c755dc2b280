"""Fit one temperature on held-out images and fold it into the final layer.

    python tools/analysis_tools/calibrate.py CONFIG CHECKPOINT --out OUT

runs the model over the images of the config's ``val_dataloader`` (choose
a held-out split through the config or ``--cfg-options``), fits the
temperature ``T`` that minimises their negative log-likelihood, and writes
``OUT`` with the final linear layer's weight and bias divided by ``T``: the
same ``state_dict`` keys and shapes, the same predicted class for every
image, calibrated ``pred_score``. ``OUT`` holds ``state_dict`` and ``meta``
(plain data, ``meta['calibration']`` recording ``T``, the images and the
metrics before and after); it loads in plain mmpretrain and with
``torch.load(weights_only=True)``. The tool prints ``T`` and NLL, ECE,
confidence gap and top-1 on those images before and after. A head whose
logits are not one linear layer's output, too few images, or no finite
temperature end with one ``error:`` line and exit status 2, writing nothing.
"""
import argparse
import math
import os.path as osp
import sys
from typing import Any, Dict, List, Optional, Tuple

from mmengine.config import Config

# The tools' shared package, tools/mmbake_tools: this script's folder is on
# sys.path, tools/ is not.
TOOLS_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
if TOOLS_DIR not in sys.path:
    sys.path.insert(0, TOOLS_DIR)
# isort: off
from mmbake_tools.cli import (  # noqa: E402
    apply_cfg_options, errors_as_one_line, new_parser, parse_checked, say)
from mmbake_tools.data_checks import (  # noqa: E402
    check_data_paths, check_labels_fit, reading_data)
# isort: on

LOADER = 'val_dataloader'
# Fewer held-out images than this give a temperature too noisy to ship.
MIN_IMAGES = 100
# The folded model's logits must equal the original's divided by T to this
# relative tolerance (float32 rounding of the divided weights).
FOLD_RTOL = 1e-4


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse and check the command line; bad input exits with status 2."""
    parser = new_parser(
        'Fit a temperature on the val_dataloader images and '
        'fold it into the final layer', 'checkpoint file')
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


def build(cfg: Config, checkpoint: Dict[str, Any], device: str) -> Tuple:
    """The model with the checkpoint's weights, in eval mode, and the
    ``val_dataloader``."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmpretrain.registry import MODELS

    init_default_scope(cfg.get('default_scope', None) or 'mmpretrain')
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor', None) is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    model.load_state_dict(checkpoint['state_dict'])
    model.to(device).eval()
    with reading_data(cfg, LOADER):
        loader = Runner.build_dataloader(cfg[LOADER])
    check_labels_fit(model, loader.dataset, LOADER)
    return model, loader


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


def metrics(logits: Any, labels: Any, num_bins: int) -> Dict[str, float]:
    """NLL, ECE, confidence gap and top-1 of ``softmax(logits)``."""
    from mmbake.evaluation import Calibration

    scores = logits.double().softmax(dim=1)
    result = Calibration.calculate(scores, labels, num_bins)
    result['top1'] = 100.0 * float(
        (scores.argmax(1) == labels).double().mean())
    return result


def calibrate(args: argparse.Namespace, cfg: Config) -> Dict[str, Any]:
    """Fit, fold and check; return the checkpoint to write."""
    import torch

    from mmbake.evaluation import (final_linear, fit_temperature,
                                   fold_temperature)
    from mmbake.models import final_layer_of
    from mmbake.utils import load_checkpoint_weights_only

    check_data_paths(cfg, (LOADER, ))
    checkpoint = load_checkpoint_weights_only(args.checkpoint)
    if 'state_dict' not in checkpoint:
        checkpoint = dict(state_dict=checkpoint)
    meta = dict(checkpoint.get('meta') or {})
    if 'calibration' in meta:
        raise ValueError(
            f'{args.checkpoint} is calibrated already (temperature '
            f'{meta["calibration"].get("temperature")}); calibrate the '
            'original checkpoint')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model, loader = build(cfg, checkpoint, device)
    layer = final_layer_of(model.head)
    names = {id(p): n for n, p in model.named_parameters()}
    linear = final_linear(layer)
    logits, labels = predict(model, loader)
    if len(labels) < MIN_IMAGES:
        raise ValueError(
            f'{LOADER} has {len(labels)} images, too few to fit a '
            f'temperature on (at least {MIN_IMAGES})')
    temperature = fit_temperature(logits, labels)
    fold_temperature(layer, temperature)
    folded = predict(model, loader)[0]
    expected = logits / temperature
    scale = float(expected.abs().max())
    if not torch.allclose(
            folded, expected, rtol=FOLD_RTOL, atol=FOLD_RTOL * scale):
        raise ValueError(
            f'the logits of {type(model.head).__name__} are not the output '
            f'of its final linear layer ({names[id(linear.weight)][:-7]}): '
            'dividing that layer by T does not divide them by T')
    before = metrics(logits, labels, args.num_bins)
    after = metrics(folded, labels, args.num_bins)
    if not all(math.isfinite(value) for value in after.values()):
        raise ValueError(f'non-finite metrics after scaling by T = '
                         f'{temperature}: {after}')
    state_dict = dict(checkpoint['state_dict'])
    changed = [names[id(linear.weight)]]
    if linear.bias is not None:
        changed.append(names[id(linear.bias)])
    for name in changed:
        state_dict[name] = (state_dict[name] / temperature).to(
            state_dict[name].dtype)
    meta['calibration'] = dict(
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
        before=before,
        after=after)
    return dict(state_dict=state_dict, meta=meta)


def report(calibration: Dict[str, Any], out: str) -> None:
    """Print the temperature and the metrics before and after."""
    say(f'Fitted on {calibration["num_images"]} images of {LOADER}: '
        f'temperature T = {calibration["temperature"]:.4f}')
    say(f'{"":14}{"NLL":>8}{"ECE (%)":>10}{"gap (points)":>14}'
        f'{"top-1 (%)":>11}')
    for when in ('before', 'after'):
        m = calibration[when]
        say(f'{when:14}'
            f'{m["nll"]:8.4f}{m["ece"]:10.2f}{m["confidence_gap"]:+14.2f}'
            f'{m["top1"]:11.2f}')
    say(f'Same top-1 class for {calibration["predictions_unchanged"]} of '
        f'{calibration["num_images"]} images; wrote {out} '
        f'({", ".join(calibration["changed"])} divided by T)')


def main(argv: Optional[List[str]] = None) -> None:
    """Calibrate from the command line."""
    args = parse_args(argv)
    import mmbake  # noqa: F401
    from mmbake.utils import write_atomically

    cfg = apply_cfg_options(Config.fromfile(args.config), args, (LOADER, ))
    with errors_as_one_line():
        checkpoint = calibrate(args, cfg)

    import io

    import torch
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_atomically(lambda f: f.write(buffer.getvalue()), args.out)
    report(checkpoint['meta']['calibration'], args.out)


if __name__ == '__main__':
    main()
