"""BAKE classification heads."""
from .bake_head import (SUPPORTED_HEADS, BAKEHead, BAKEMixin,
                        BAKEStackedLinearClsHead, BAKEVisionTransformerClsHead,
                        make_bake_head)

__all__ = [
    'BAKEMixin', 'BAKEHead', 'BAKEVisionTransformerClsHead',
    'BAKEStackedLinearClsHead', 'make_bake_head', 'SUPPORTED_HEADS'
]
