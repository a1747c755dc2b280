"""Pictures of BAKE's ensembled soft targets (like Fig. 5 of the paper).

:func:`draw_soft_targets` draws a grid of the first images of a batch, each
with its ground truth, the model's top-k and the ensembled top-k, and saves
it as a PNG; :func:`visualize_batches` predicts, summarises and draws every
batch of :func:`~.soft_target_batches.build_class_aware_batches`.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import torch

from .soft_target_batches import predict_soft_targets, soft_target_stats


def _to_display(image: torch.Tensor, bgr: bool):
    """A CHW uint8 tensor as an HxW or HxWx3 array for ``imshow``."""
    array = image.detach().cpu().numpy()
    if array.shape[0] == 1:
        return array[0]
    array = array.transpose(1, 2, 0)
    return array[..., ::-1] if bgr and array.shape[2] == 3 else array


def _topk_lines(probs: torch.Tensor, classes: Sequence[str], gt: int,
                topk: int) -> List[str]:
    """'Coat      41' lines; a '*' marks the ground-truth class."""
    values, idx = probs.topk(min(topk, probs.numel()))
    lines = []
    for value, cls in zip(values.tolist(), idx.tolist()):
        name = classes[cls] if cls < len(classes) else str(cls)
        mark = '*' if cls == gt else ' '
        lines.append(f'{mark}{name[:11]:<11}{100 * value:3.0f}')
    return lines


def draw_soft_targets(images: Sequence[torch.Tensor],
                      result: Dict[str, torch.Tensor],
                      classes: Sequence[str],
                      path: str,
                      max_images: int = 16,
                      ncols: int = 8,
                      topk: int = 3,
                      num_instances: int = 2,
                      bgr: bool = False,
                      title: Optional[str] = None) -> str:
    """Draw images with their ground truth, own top-k and ensembled top-k.

    Args:
        images (Sequence[Tensor]): The batch's uint8 CHW images (before the
            data preprocessor).
        result (dict): The output of :func:`predict_soft_targets`.
        classes (Sequence[str]): Class names, by label.
        path (str): The PNG to write (folders are created).
        max_images (int): Images drawn, from the start of the batch.
            Defaults to 16.
        ncols (int): Images per row; a multiple of ``num_instances`` keeps
            each class group on one row. Defaults to 8.
        topk (int): Classes listed per prediction. Defaults to 3.
        num_instances (int): Images per class group, to mark the anchors.
            Defaults to 2.
        bgr (bool): Whether 3-channel images are in BGR order. Defaults to
            False.
        title (str, optional): Figure title.

    Returns:
        str: ``path``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    num = min(max_images, len(images))
    ncols = max(1, min(ncols, num))
    nrows = (num + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.75 * ncols, 3.1 * nrows + 0.5), squeeze=False)
    temperature = result['temperature']
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= num:
            ax.axis('off')
            continue
        gt = int(result['gt_labels'][i])
        own = result['own'][i]
        target = result['targets'][i]
        ax.imshow(_to_display(images[i], bgr), cmap='gray')
        role = 'anchor' if i % max(num_instances, 1) == 0 else 'mate'
        gt_name = classes[gt] if gt < len(classes) else str(gt)
        ax.set_title(f'#{i} {role}\nGT: {gt_name}', fontsize=7)
        own_ok = int(own.argmax()) == gt
        target_ok = int(target.argmax()) == gt
        text = '\n'.join(['own (T={:g})'.format(temperature)] +
                         _topk_lines(own, classes, gt, topk) + ['BAKE Q'] +
                         _topk_lines(target, classes, gt, topk))
        ax.set_xlabel(text, fontsize=5.5, family='monospace', loc='left')
        # Frame colour: green when the ensembled target's top-1 is right,
        # orange when only the own prediction is, red when neither is.
        color = 'tab:green' if target_ok else (
            'tab:orange' if own_ok else 'tab:red')
        for spine in ax.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(2)
    fig.suptitle(
        (title + '\n' if title else '') +
        f'own = softmax(z/T), BAKE Q = ensembled target (omega='
        f'{result["omega"]:g}); * marks the ground truth; frame: green = Q '
        'top-1 right, orange = only own right, red = both wrong',
        fontsize=7)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def visualize_batches(model: torch.nn.Module,
                      batches: Dict[str, object],
                      out_prefix: str,
                      omega: Optional[float] = None,
                      temperature: Optional[float] = None,
                      max_images: int = 16,
                      ncols: int = 8,
                      topk: int = 3,
                      title: Optional[str] = None) -> List[dict]:
    """Predict, summarise and draw every batch of
    :func:`build_class_aware_batches`.

    Args:
        model (nn.Module): An mmpretrain ``ImageClassifier`` (unwrapped).
        batches (dict): The output of :func:`build_class_aware_batches`.
        out_prefix (str): PNG paths are ``{out_prefix}_batch{i}.png``.
        omega, temperature (float, optional): See
            :func:`predict_soft_targets`.
        max_images, ncols, topk: See :func:`draw_soft_targets`.
        title (str, optional): Figure title prefix.

    Returns:
        list[dict]: Per batch, ``path`` (the PNG written) and the
        :func:`soft_target_stats` of the whole batch (when it holds two or
        more images).
    """
    preprocessor = model.data_preprocessor
    bgr = bool(getattr(preprocessor, '_channel_conversion', False))
    outputs = []
    for i, batch in enumerate(batches['batches']):
        result = predict_soft_targets(model, batch, omega, temperature)
        batch_title = f'{title}, batch {i}' if title else f'batch {i}'
        stats = soft_target_stats(result) if len(batch['inputs']) > 1 else {}
        path = draw_soft_targets(
            batch['inputs'],
            result,
            batches['classes'],
            f'{out_prefix}_batch{i}.png',
            max_images=max_images,
            ncols=ncols,
            topk=topk,
            num_instances=batches['num_instances'],
            bgr=bgr,
            title=batch_title)
        outputs.append(dict(path=path, **stats))
    return outputs
