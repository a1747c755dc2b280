"""The BAKE loss, added to any mmpretrain classification head."""
import warnings
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.structures import DataSample

from ..utils import knowledge_ensemble


def _check_bake_args(omega: float, temperature: float, bake_weight: float,
                     ensemble_group_size: Optional[int]) -> None:
    """Raise a ValueError naming the first BAKE argument out of range."""
    if not isinstance(omega, (int, float)) or not 0.0 <= omega < 1.0:
        raise ValueError(f'omega must be a float in [0, 1), but got {omega!r}.')
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(
            f'temperature must be a float > 0, but got {temperature!r}.')
    if not isinstance(bake_weight, (int, float)) or not bake_weight >= 0:
        raise ValueError(
            f'bake_weight must be a float >= 0, but got {bake_weight!r}.')
    if ensemble_group_size is not None and (
            isinstance(ensemble_group_size, bool)
            or not isinstance(ensemble_group_size, int)
            or ensemble_group_size < 1):
        raise ValueError('ensemble_group_size must be None or an int >= 1, '
                         f'but got {ensemble_group_size!r}.')


class BAKEMixin:
    """Adds the BAKE self-distillation term to a ``ClsHead`` subclass.

    Mixed in before the head class (``class H(BAKEMixin, LinearClsHead)``),
    it leaves the head's layers, ``pre_logits``, ``forward`` and ``predict``
    untouched and only replaces ``loss``:

    ``L = CE(z, y) + bake_weight * T^2 * KL(Q || softmax(z / T))``,

    where ``Q`` comes from :func:`~mmbake.models.knowledge_ensemble` on the
    detached ``pre_logits`` and logits, and the KL is summed over classes and
    averaged over the batch. The cross-entropy goes through the head's
    configured ``loss`` module (so label smoothing and the soft ``gt_score``
    of Mixup/CutMix work) and is logged as ``loss_ce``; the BAKE term as
    ``loss_bake``. No parameter or buffer is added, so checkpoints are
    interchangeable with the plain head.

    Subclasses name their final classification layer in
    ``bake_final_layer`` (a dotted attribute path, ``'fc'`` by default): the
    logits must equal ``final_layer(pre_logits(feats))``.

    Args:
        omega (float): Propagation weight in [0, 1). Defaults to 0.5.
        temperature (float): Distillation temperature > 0. Defaults to 4.0.
        bake_weight (float): Weight ``lambda`` >= 0 of the BAKE term.
            Defaults to 1.0.
        global_ensemble (bool): Ensemble over the batches of all ranks
            (gathered, no gradient through the gather). Defaults to True.
        ensemble_group_size (int, optional): Ensemble within consecutive
            groups of this many ranks; None for all ranks. Defaults to None.
        *args, **kwargs: The arguments of the wrapped head class.
    """

    bake_final_layer: str = 'fc'

    def __init__(self,
                 *args,
                 omega: float = 0.5,
                 temperature: float = 4.0,
                 bake_weight: float = 1.0,
                 global_ensemble: bool = True,
                 ensemble_group_size: Optional[int] = None,
                 **kwargs) -> None:
        _check_bake_args(omega, temperature, bake_weight, ensemble_group_size)
        super().__init__(*args, **kwargs)
        self.omega = float(omega)
        self.temperature = float(temperature)
        self.bake_weight = float(bake_weight)
        self.global_ensemble = bool(global_ensemble)
        self.ensemble_group_size = ensemble_group_size
        self._layout_checked = False

    @property
    def final_layer(self) -> nn.Module:
        """The layer that maps ``pre_logits`` to the logits."""
        module = self
        for name in self.bake_final_layer.split('.'):
            module = getattr(module, name)
        return module

    def loss(self, feats: Tuple[torch.Tensor], data_samples: List[DataSample],
             **kwargs) -> dict:
        """Compute the cross-entropy and BAKE losses of a batch.

        Args:
            feats (tuple[Tensor]): The features from the neck or backbone.
            data_samples (List[DataSample]): The annotations of the batch.
            **kwargs: Other keyword arguments for the loss module.

        Returns:
            dict[str, Tensor]: ``loss_ce``, ``loss_bake`` and, with
            ``cal_acc``, the training accuracies.
        """
        # The part can be traced by torch.fx
        pre_logits = self.pre_logits(feats)
        cls_score = self.final_layer(pre_logits)
        # The part can not be traced by torch.fx
        losses = self._get_loss(cls_score, data_samples, **kwargs)
        losses = dict(loss_ce=losses.pop('loss'), **losses)
        losses['loss_bake'] = self._bake_loss(pre_logits, cls_score)
        if not self._layout_checked:
            self._layout_checked = True
            self._warn_if_not_class_aware(data_samples)
        return losses

    def _bake_loss(self, pre_logits: torch.Tensor,
                   cls_score: torch.Tensor) -> torch.Tensor:
        """The weighted KL term between the ensembled targets and the head.

        Args:
            pre_logits (Tensor): The features entering the final layer.
            cls_score (Tensor): The logits, with their gradient.

        Returns:
            Tensor: A float32 scalar. It is zero when ``bake_weight`` is 0,
            and zero on every rank of the ensemble group when the batch held
            non-finite values (the step's cross-entropy is then non-finite
            too, so AMP's loss scaler or the user sees it there); this
            policy needs no host synchronisation.
        """
        if self.bake_weight == 0:
            return cls_score.new_zeros((), dtype=torch.float32)
        targets = knowledge_ensemble(
            pre_logits.flatten(1),
            cls_score,
            omega=self.omega,
            temperature=self.temperature,
            global_ensemble=self.global_ensemble,
            ensemble_group_size=self.ensemble_group_size,
            nonfinite='skip')
        log_student = F.log_softmax(cls_score.float() / self.temperature, 1)
        kl = F.kl_div(log_student, targets, reduction='batchmean')
        kl = torch.nan_to_num(kl, nan=0.0, posinf=0.0, neginf=0.0)
        return kl * (self.bake_weight * self.temperature**2)

    @staticmethod
    def _warn_if_not_class_aware(data_samples: List[DataSample]) -> None:
        """Warn once when the batch does not look class-aware.

        BAKE ensembles knowledge between similar images; in a plainly
        shuffled batch most neighbours belong to other classes. With
        ``ClassAwareBatchSampler`` every anchor is directly followed by a
        mate of its class, so at least half of the neighbouring pairs share
        a label.
        """
        if not data_samples or 'gt_label' not in data_samples[0]:
            return
        labels = [int(s.gt_label[0]) for s in data_samples
                  if s.gt_label.numel() == 1]
        if len(labels) < 4:
            return
        same = sum(a == b for a, b in zip(labels[:-1], labels[1:]))
        if same / (len(labels) - 1) < 0.25:
            warnings.warn(
                'BAKE: the first training batch does not look class-aware '
                f'({same} of {len(labels) - 1} neighbouring images share a '
                'label), so BAKE ensembles mostly unrelated images. Use '
                "batch_sampler=dict(type='ClassAwareBatchSampler', "
                'num_instances=2) in train_dataloader.')
