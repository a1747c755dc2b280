"""BAKE classification heads."""
from .bake_heads import (SUPPORTED_HEADS, BAKEHead,
                         BAKEStackedLinearClsHead,
                         BAKEVisionTransformerClsHead, make_bake_head)
from .bake_mixin import BAKEMixin

__all__ = [
    'BAKEMixin', 'BAKEHead', 'BAKEVisionTransformerClsHead',
    'BAKEStackedLinearClsHead', 'make_bake_head', 'SUPPORTED_HEADS'
]
