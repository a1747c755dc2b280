"""The BAKE loss, added to any mmpretrain classification head."""
import warnings
from functools import partial
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from mmpretrain.structures import DataSample

from ..utils import (CUDAGraphCache, PrecomputedGradient, ensemble_world_size,
                     gather_ensemble_batch, gathered_terms, local_terms,
                     soften)


def _check_bake_args(omega: float, temperature: float, bake_weight: float,
                     ensemble_group_size: Optional[int],
                     cuda_graph: bool) -> None:
    """Raise a ValueError naming the first BAKE argument out of range."""
    if not isinstance(omega, (int, float)) or not 0.0 <= omega < 1.0:
        raise ValueError(
            f'omega must be a float in [0, 1), but got {omega!r}.')
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
    if not isinstance(cuda_graph, bool):
        raise ValueError(
            f'cuda_graph must be True or False, but got {cuda_graph!r}.')


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

    The term and its gradient (``bake_weight * T * (softmax(z / T) - Q) /
    B``) are computed together without autograd and handed to autograd as
    one node. On CUDA they are captured in a CUDA graph per batch shape and
    replayed with one launch: a small-batch step is bound by kernel
    launches, and BAKE's few dozen small kernels would otherwise add
    measurably to it (docs/benchmarks.md). Collectives of the global
    ensemble stay outside the graphs.

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
        cuda_graph (bool): On CUDA, replay the BAKE term from CUDA graphs
            (one per batch shape, at most 8; the same numbers as eager
            execution). False runs it eagerly. Defaults to True.
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
                 cuda_graph: bool = True,
                 **kwargs) -> None:
        _check_bake_args(omega, temperature, bake_weight, ensemble_group_size,
                         cuda_graph)
        super().__init__(*args, **kwargs)
        self.omega = float(omega)
        self.temperature = float(temperature)
        self.bake_weight = float(bake_weight)
        self.global_ensemble = bool(global_ensemble)
        self.ensemble_group_size = ensemble_group_size
        self.cuda_graph = cuda_graph
        # Not a module or buffer: never in the state_dict; deep copies
        # (EMA) start empty. Without graphs it runs everything eagerly.
        self._graphs = CUDAGraphCache(max_graphs=8 if cuda_graph else 0)
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
            Tensor: A float32 scalar whose gradient reaches ``cls_score``
            only. It is zero when ``bake_weight`` is 0, and zero (with a
            zero gradient) on every rank of the ensemble group when the
            batch held non-finite values (the step's cross-entropy is then
            non-finite too, so AMP's loss scaler or the user sees it
            there); this policy needs no host synchronisation.
        """
        if self.bake_weight == 0:
            return cls_score.new_zeros((), dtype=torch.float32)
        loss, grad = self._bake_terms(pre_logits.detach().flatten(1),
                                      cls_score.detach())
        return PrecomputedGradient.apply(cls_score, loss, grad)

    def _bake_terms(self, feats: torch.Tensor,
                    logits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The BAKE loss and its gradient with respect to the logits.

        Args:
            feats (Tensor): Detached ``pre_logits``, shape (B, D).
            logits (Tensor): Detached logits, shape (B, K).

        Returns:
            tuple[Tensor, Tensor]: See
            :func:`~mmbake.models.utils.distillation_terms`.
        """
        scalars = dict(omega=self.omega, temperature=self.temperature,
                       weight=self.bake_weight)
        key = tuple(scalars.values())
        if not (self.global_ensemble
                and ensemble_world_size(self.ensemble_group_size) > 1):
            return self._graphs(partial(local_terms, **scalars), feats,
                                logits, key=('local', ) + key)
        feats, probs = self._graphs(
            partial(soften, temperature=self.temperature), feats, logits,
            key=('soften', self.temperature))
        all_feats, all_probs, offset = gather_ensemble_batch(
            feats, probs, self.ensemble_group_size)
        return self._graphs(
            partial(gathered_terms, offset=offset, **scalars), all_feats,
            all_probs, logits, key=('gathered', offset) + key)

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
