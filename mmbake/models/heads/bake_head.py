"""BAKE versions of mmpretrain's classification heads."""
import warnings
from functools import partial, reduce
from typing import List, Optional, Tuple, Type

import torch
import torch.nn as nn
from mmpretrain.models.heads import (ClsHead, LinearClsHead,
                                     StackedLinearClsHead,
                                     VisionTransformerClsHead)
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..utils import (CUDAGraphs, EnsembleGroup, check_bake_args,
                     distillation_kl, knowledge_ensemble)


class BAKEMixin:
    """Adds BAKE to a ``ClsHead``: ``class H(BAKEMixin, SomeClsHead)``.

    Replaces ``loss`` only. ``bake_final_layer`` is the dotted path of the
    layer that maps ``pre_logits`` to the logits. Takes the BAKE arguments
    of :class:`BAKEHead`, the others are the head's.
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
        check_bake_args(omega, temperature, bake_weight, cuda_graph)
        # Not modules, never in the state_dict; copies of graphs are empty.
        group = EnsembleGroup(ensemble_group_size)
        super().__init__(*args, **kwargs)
        self.omega, self.temperature = float(omega), float(temperature)
        self.bake_weight = float(bake_weight)
        self.global_ensemble = bool(global_ensemble)
        self._ensemble_group = group
        self._graphs = CUDAGraphs() if cuda_graph else None
        self._layout_checked = False

    final_layer = property(
        lambda self: final_layer_of(self),
        doc='The layer that maps pre_logits to logits.')

    def loss(self, feats: Tuple[torch.Tensor], data_samples: List[DataSample],
             **kwargs) -> dict:
        """Cross-entropy plus ``lambda T^2 KL(Q || softmax(z / T))``.

        Args:
            feats (tuple[Tensor]): The features from the neck or backbone.
            data_samples (List[DataSample]): The annotations of the batch.
            **kwargs: Other keyword arguments for the loss module.

        Returns:
            dict[str, Tensor]: ``loss_ce`` (the configured loss), ``loss_bake``
            and, with ``cal_acc``, the training accuracies.
        """
        if not self._layout_checked:
            self._layout_checked = True
            _warn_if_not_class_aware(data_samples)
        pre_logits = self.pre_logits(feats)
        cls_score = self.final_layer(pre_logits)
        losses = self._get_loss(cls_score, data_samples, **kwargs)
        losses = dict(loss_ce=losses.pop('loss'), **losses)
        # Q: the batch's predictions propagated between similar images.
        targets = knowledge_ensemble(
            pre_logits.flatten(1),
            cls_score,
            self.omega,
            self.temperature,
            self.global_ensemble,
            cuda_graphs=self._graphs,
            ensemble_group=self._ensemble_group)
        losses['loss_bake'] = self.bake_weight * self.temperature**2 * \
            distillation_kl(cls_score, targets, self.temperature, self._graphs)
        return losses


def _warn_if_not_class_aware(data_samples: List[DataSample]) -> None:
    """Warn if few neighbours share a label (no ClassAwareBatchSampler)."""
    labels = [
        int(s.gt_label[0]) for s in data_samples
        if 'gt_label' in s and s.gt_label.numel() == 1
    ]
    same = sum(a == b for a, b in zip(labels[:-1], labels[1:]))
    if len(labels) >= 4 and same / (len(labels) - 1) < 0.25:
        warnings.warn(
            'BAKE: the first training batch does not look class-aware '
            f'({same} of {len(labels) - 1} neighbouring images share a '
            'label), so BAKE ensembles mostly unrelated images. Use '
            "batch_sampler=dict(type='ClassAwareBatchSampler', "
            'num_instances=2) in train_dataloader.')


# Heads whose logits are not one final layer applied to ``pre_logits``.
_UNSUPPORTED = {
    'DeiTClsHead': 'it averages class- and distillation-token classifiers',
    'EfficientFormerClsHead': 'it averages class and distillation heads',
    'ConformerHead': 'it returns two sets of logits (CNN and transformer)',
}
SUPPORTED_HEADS = ('BAKEHead', 'BAKEVisionTransformerClsHead',
                   'BAKEStackedLinearClsHead')


def _refuse(name: str, *args, **kwargs) -> None:
    """Raise why BAKE does not support the head family ``name``."""
    raise ValueError(
        f'BAKE does not support {name}: {_UNSUPPORTED[name]}. Supported '
        f'head types: {", ".join(SUPPORTED_HEADS)}, or make_bake_head() for '
        'a ClsHead whose logits are one final layer applied to pre_logits.')


def make_bake_head(head_cls: Type[ClsHead],
                   final_layer: str = 'fc') -> Type[ClsHead]:
    """Create ``'BAKE' + head_cls.__name__`` (not registered).

    Args:
        head_cls (type): A single-label ``ClsHead`` subclass whose logits
            are ``final_layer(pre_logits(feats))``.
        final_layer (str): Dotted path of that layer. Defaults to ``'fc'``.

    Returns:
        type: A head taking the arguments of ``head_cls`` and those of
        :class:`BAKEMixin`, with the same ``state_dict``.
    """
    if not (isinstance(head_cls, type) and issubclass(head_cls, ClsHead)):
        raise ValueError('head_cls must be a subclass of mmpretrain ClsHead '
                         f'(single-label), but got {head_cls!r}.')
    for base in head_cls.__mro__:
        if base.__name__ in _UNSUPPORTED:
            _refuse(base.__name__)
    doc = f'{head_cls.__name__} trained with BAKE (see BAKEMixin).'
    return type(
        f'BAKE{head_cls.__name__}', (BAKEMixin, head_cls),
        dict(bake_final_layer=final_layer, __doc__=doc, __module__=__name__))


@MODELS.register_module()
class BAKEHead(BAKEMixin, LinearClsHead):
    """``LinearClsHead`` trained with BAKE self-distillation.

    Same parameters, ``state_dict`` keys and ``predict`` as
    ``LinearClsHead``; ``loss`` adds the BAKE term (see :class:`BAKEMixin`).

    Args:
        num_classes (int): Number of categories.
        in_channels (int): Number of input feature channels.
        omega (float): Propagation weight in [0, 1). Defaults to 0.5.
        temperature (float): Distillation temperature > 0. Defaults to 4.0.
        bake_weight (float): Weight of the BAKE term, >= 0. Defaults to 1.0.
        global_ensemble (bool): Ensemble across all ranks. Defaults to True.
        ensemble_group_size (int, optional): Ensemble within consecutive
            groups of this many ranks. Defaults to None (all ranks).
        cuda_graph (bool): Replay the BAKE term from CUDA graphs on CUDA.
            Defaults to True.
        **kwargs: Other ``LinearClsHead`` arguments (``loss``, ``topk``,
            ``cal_acc``, ``init_cfg``).
    """


# The layer that gives the logits of the heads that have a BAKE version.
FINAL_LAYERS = {
    LinearClsHead: 'fc',
    VisionTransformerClsHead: 'layers.head',
    StackedLinearClsHead: 'fc',
}
BAKEVisionTransformerClsHead = MODELS.register_module(
    module=make_bake_head(VisionTransformerClsHead, 'layers.head'))
BAKEStackedLinearClsHead = MODELS.register_module(
    module=make_bake_head(StackedLinearClsHead))


def final_layer_of(head: nn.Module) -> nn.Module:
    """The layer that maps a head's ``pre_logits`` to its logits.

    Args:
        head (nn.Module): A :class:`BAKEMixin` head, or one of the heads of
            :data:`FINAL_LAYERS` (exactly: a subclass may compute its logits
            otherwise). Any other head raises a ValueError.

    Returns:
        nn.Module: The final layer.
    """
    path = head.bake_final_layer if isinstance(head, BAKEMixin) else \
        FINAL_LAYERS.get(type(head))
    if path is None:
        supported = list(SUPPORTED_HEADS) + [c.__name__ for c in FINAL_LAYERS]
        raise ValueError(
            f'{type(head).__name__} is not a head whose logits are one final '
            f'layer applied to pre_logits; supported: {", ".join(supported)} '
            'and make_bake_head() products')
    return reduce(getattr, path.split('.'), head)


for _name in _UNSUPPORTED:
    MODELS.register_module(name=f'BAKE{_name}', module=partial(_refuse, _name))
