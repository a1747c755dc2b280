"""BAKE's ensembled soft targets on real batches: the numbers.

Used by ``tools/analysis_tools/visualize_soft_targets.py`` and by
:class:`~mmbake.engine.SoftTargetVisualizationHook` alike (the drawing is
in :mod:`.soft_targets`):

- :func:`build_class_aware_batches`: a few class-aware batches of the
  training set, read through the test pipeline (no random crop or flip), in
  the order of a seeded ``DefaultSampler`` wrapped by
  ``ClassAwareBatchSampler``;
- :func:`predict_soft_targets`: the model (in eval mode) on one batch: its
  own softened prediction ``softmax(z / T)`` and the ensembled target ``Q``
  of :func:`~mmbake.models.knowledge_ensemble` over the whole batch;
- :func:`batch_affinity`, :func:`soft_target_stats`, :func:`format_stats`:
  what the affinity and the targets look like, in a few numbers.
"""
import copy
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from mmengine.dataset import DefaultSampler, pseudo_collate
from mmpretrain.registry import DATASETS

from ..datasets import ClassAwareBatchSampler
from ..models import knowledge_ensemble

DEFAULT_OMEGA = 0.5
DEFAULT_TEMPERATURE = 4.0


def _innermost_dataset_cfg(dataset_cfg: dict) -> dict:
    """The dataset config that holds the pipeline (wrappers nest it)."""
    while 'pipeline' not in dataset_cfg and 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


def build_class_aware_batches(cfg,
                              num_batches: int = 1,
                              batch_size: Optional[int] = None,
                              num_instances: Optional[int] = None,
                              seed: int = 0) -> Dict[str, object]:
    """Form class-aware batches of the training set, without augmentation.

    Args:
        cfg (Config): A full config with ``train_dataloader`` and
            ``test_dataloader`` (or ``val_dataloader``).
        num_batches (int): Batches to form. Defaults to 1.
        batch_size (int, optional): Images per batch; the training batch
            size when None (the ensembling depends on the batch).
        num_instances (int, optional): Images per class group; the config's
            ``ClassAwareBatchSampler`` value when None, else 2.
        seed (int): Seed of the anchor order. Defaults to 0.

    Returns:
        dict: ``batches``: a list of collated batches (``inputs``, a list of
        uint8 CHW tensors, and ``data_samples``); ``indices``: their dataset
        indices; ``classes``: the class names; ``num_instances``.
    """
    if not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(
            f'num_batches must be an int >= 1, but got {num_batches!r}.')
    loader_cfg = cfg.train_dataloader
    dataset_cfg = copy.deepcopy(loader_cfg.dataset)
    test_loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if test_loader is not None:
        # Test-time transforms: the picture shows what the images are, not
        # one random crop of them.
        _innermost_dataset_cfg(dataset_cfg)['pipeline'] = copy.deepcopy(
            _innermost_dataset_cfg(test_loader.dataset)['pipeline'])
    dataset = DATASETS.build(dataset_cfg)

    batch_sampler_cfg = loader_cfg.get('batch_sampler') or {}
    if num_instances is None:
        num_instances = batch_sampler_cfg.get('num_instances', 2)
    batch_size = batch_size or loader_cfg.batch_size
    sampler = DefaultSampler(dataset, shuffle=True, seed=seed)
    batch_sampler = ClassAwareBatchSampler(
        sampler, batch_size, num_instances=num_instances)
    batches, indices = [], []
    for batch_indices in batch_sampler:
        batches.append(pseudo_collate([dataset[i] for i in batch_indices]))
        indices.append(list(batch_indices))
        if len(batches) == num_batches:
            break
    return dict(
        batches=batches,
        indices=indices,
        classes=list(dataset.metainfo.get('classes') or []),
        num_instances=num_instances)


@torch.no_grad()
def predict_soft_targets(
        model: torch.nn.Module,
        data_batch: dict,
        omega: Optional[float] = None,
        temperature: Optional[float] = None) -> Dict[str, torch.Tensor]:
    """The model's own softened predictions and BAKE's ensembled targets.

    The model runs in eval mode (restored afterwards) on the whole batch;
    the targets are ``knowledge_ensemble(pre_logits, logits, omega, T)``,
    exactly what ``BAKEHead`` distils towards, except that batch
    normalisation uses its running statistics.

    Args:
        model (nn.Module): An mmpretrain ``ImageClassifier`` (unwrapped).
        data_batch (dict): A collated batch (``inputs``, ``data_samples``).
        omega (float, optional): Propagation weight; the head's ``omega``
            when None (0.5 for a head without one).
        temperature (float, optional): Temperature ``T``; the head's when
            None (4.0 for a head without one).

    Returns:
        dict[str, Tensor]: ``own`` (``softmax(logits / T)``), ``targets``
        (``Q``), both float32 (B, K) on the CPU; ``gt_labels`` (B,);
        ``pre_logits`` (B, D); and the ``omega`` and ``temperature`` used
        (as floats).
    """
    head = model.head
    omega = getattr(head, 'omega', DEFAULT_OMEGA) if omega is None else omega
    if temperature is None:
        temperature = getattr(head, 'temperature', DEFAULT_TEMPERATURE)
    was_training = model.training
    model.eval()
    try:
        data = model.data_preprocessor(data_batch, False)
        feats = model.extract_feat(data['inputs'])
        pre_logits = head.pre_logits(feats)
        logits = head(feats)
    finally:
        model.train(was_training)
    own = F.softmax(logits.float() / temperature, dim=1)
    targets = knowledge_ensemble(
        pre_logits.flatten(1), logits, omega=omega, temperature=temperature)
    gt_labels = torch.tensor(
        [int(s.gt_label[0]) for s in data['data_samples']])
    return dict(
        own=own.cpu(),
        targets=targets.cpu(),
        gt_labels=gt_labels,
        pre_logits=pre_logits.flatten(1).float().cpu(),
        omega=float(omega),
        temperature=float(temperature))


def batch_affinity(feats: torch.Tensor) -> torch.Tensor:
    """BAKE's affinity ``A``: row softmax of cosine similarities, i != j.

    Args:
        feats (Tensor): Features (B, D), B >= 2.

    Returns:
        Tensor: ``A`` (B, B), rows summing to one, zero diagonal.
    """
    unit = F.normalize(feats.float(), dim=1)
    sim = unit @ unit.t()
    sim.fill_diagonal_(float('-inf'))
    return F.softmax(sim, dim=1)


def soft_target_stats(result: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Summaries of one batch's own predictions, targets and affinity.

    Args:
        result (dict): The output of :func:`predict_soft_targets` for a
            batch of two or more images.

    Returns:
        dict[str, float]: ``own_top1`` / ``target_top1`` (% of images whose
        top-1 is the ground truth), ``own_gt_prob`` / ``target_gt_prob``
        (mean probability of the ground truth, %), and
        ``same_class_affinity``: the affinity mass on same-class images
        divided by their share of the other images (1.0 means ``A`` does
        not prefer same-class images at all; the mean over images with at
        least one same-class image in the batch).
    """
    gt = result['gt_labels']
    num = gt.numel()
    if num < 2:
        raise ValueError(f'soft_target_stats needs a batch of >= 2 images, '
                         f'but got {num}.')
    rows = torch.arange(num)
    stats = {}
    for name in ('own', 'targets'):
        probs = result[name]
        key = 'own' if name == 'own' else 'target'
        stats[f'{key}_top1'] = 100.0 * float(
            (probs.argmax(1) == gt).float().mean())
        stats[f'{key}_gt_prob'] = 100.0 * float(probs[rows, gt].mean())
    affinity = batch_affinity(result['pre_logits'])
    same = (gt[:, None] == gt[None, :]) & ~torch.eye(num, dtype=torch.bool)
    share = same.sum(1).float() / (num - 1)
    mass = (affinity * same).sum(1)
    has_same = share > 0
    stats['same_class_affinity'] = float(
        (mass[has_same] / share[has_same]).mean()) if has_same.any() else \
        float('nan')
    return stats


def format_stats(output: dict) -> str:
    """The statistics of an item of :func:`visualize_batches`, one line."""
    return '  '.join(f'{key}={value:.2f}' for key, value in output.items()
                     if key != 'path')
