"""BAKE versions of mmpretrain's classification heads."""
from typing import Type

from mmpretrain.models.heads import (ClsHead, LinearClsHead,
                                     StackedLinearClsHead,
                                     VisionTransformerClsHead)
from mmpretrain.registry import MODELS

from .bake_mixin import BAKEMixin

# Heads whose logits are not one final layer applied to ``pre_logits``.
_UNSUPPORTED = {
    'DeiTClsHead': 'its logits average a class-token and a distillation-'
    'token classifier',
    'EfficientFormerClsHead': 'its logits average a class and a '
    'distillation classifier',
    'ConformerHead': 'it returns two sets of logits (CNN and transformer)',
}


def make_bake_head(head_cls: Type[ClsHead],
                   final_layer: str = 'fc') -> Type[ClsHead]:
    """Create the BAKE version of a single-label ``ClsHead`` subclass.

    The new class is named ``'BAKE' + head_cls.__name__``, takes the
    arguments of ``head_cls`` plus those of :class:`BAKEMixin`, and has the
    same parameters and ``state_dict`` keys. It is not registered; do that
    with ``MODELS.register_module(module=cls)`` when configs need it.

    Args:
        head_cls (type): A subclass of mmpretrain's ``ClsHead`` whose logits
            are ``final_layer(pre_logits(feats))``.
        final_layer (str): Dotted attribute path of that final layer.
            Defaults to ``'fc'``.

    Returns:
        type: The BAKE head class.

    Raises:
        ValueError: If ``head_cls`` is not a single-label ``ClsHead``
            subclass or is a known unsupported family.
    """
    if not (isinstance(head_cls, type) and issubclass(head_cls, ClsHead)):
        raise ValueError('head_cls must be a subclass of mmpretrain ClsHead '
                         f'(single-label), but got {head_cls!r}.')
    for base in head_cls.__mro__:
        if base.__name__ in _UNSUPPORTED:
            raise ValueError(
                f'BAKE does not support {head_cls.__name__}: '
                f'{_UNSUPPORTED[base.__name__]}. Supported: heads whose '
                'logits are one final layer applied to pre_logits, e.g. '
                f'{", ".join(SUPPORTED_HEADS)}.')
    name = f'BAKE{head_cls.__name__}'
    doc = (f'{head_cls.__name__} trained with BAKE self-distillation.\n\n'
           f'Takes every argument of ``{head_cls.__name__}`` plus those of '
           ':class:`~mmbake.models.heads.BAKEMixin`.\n')
    return type(name, (BAKEMixin, head_cls), {
        'bake_final_layer': final_layer,
        '__doc__': doc,
        '__module__': __name__,
    })


@MODELS.register_module()
class BAKEHead(BAKEMixin, LinearClsHead):
    """Linear classifier head trained with BAKE self-distillation.

    A drop-in replacement for ``LinearClsHead``: same arguments, same
    parameters and ``state_dict`` keys, same ``predict``; only ``loss`` adds
    the batch-knowledge-ensembling term (see :class:`BAKEMixin`).

    Args:
        num_classes (int): Number of categories excluding the background.
        in_channels (int): Number of channels in the input feature map.
        omega (float): Propagation weight in [0, 1). Defaults to 0.5.
        temperature (float): Distillation temperature > 0. Defaults to 4.0.
        bake_weight (float): Weight of the BAKE term, >= 0. Defaults to 1.0.
        global_ensemble (bool): Ensemble across all ranks. Defaults to True.
        ensemble_group_size (int, optional): Ensemble within consecutive
            groups of this many ranks. Defaults to None (all ranks).
        **kwargs: Other ``LinearClsHead`` arguments (``loss``, ``topk``,
            ``cal_acc``, ``init_cfg``).

    Example:
        >>> head = dict(type='BAKEHead', num_classes=1000, in_channels=2048)
    """


BAKEVisionTransformerClsHead = MODELS.register_module(
    module=make_bake_head(VisionTransformerClsHead, 'layers.head'))
BAKEStackedLinearClsHead = MODELS.register_module(
    module=make_bake_head(StackedLinearClsHead, 'fc'))

SUPPORTED_HEADS = ('BAKEHead', 'BAKEVisionTransformerClsHead',
                   'BAKEStackedLinearClsHead')


def _register_unsupported(head_name: str, reason: str) -> None:
    """Register ``'BAKE' + head_name`` so that building it fails clearly."""

    def __init__(self, *args, **kwargs):
        raise ValueError(
            f'BAKE does not support {head_name}: {reason}. Supported head '
            f'types: {", ".join(SUPPORTED_HEADS)}, or make_bake_head() for '
            'a custom ClsHead subclass.')

    MODELS.register_module(
        name=f'BAKE{head_name}',
        module=type(f'BAKE{head_name}', (), {'__init__': __init__}))


for _name, _reason in _UNSUPPORTED.items():
    _register_unsupported(_name, _reason)
