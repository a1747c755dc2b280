"""BAKE classification heads."""
from .bake_head import (FINAL_LAYERS, SUPPORTED_HEADS, BAKEHead, BAKEMixin,
                        BAKEStackedLinearClsHead, BAKEVisionTransformerClsHead,
                        final_layer_of, make_bake_head)

__all__ = [
    'BAKEMixin', 'BAKEHead', 'BAKEVisionTransformerClsHead',
    'BAKEStackedLinearClsHead', 'make_bake_head', 'SUPPORTED_HEADS',
    'FINAL_LAYERS', 'final_layer_of'
]
