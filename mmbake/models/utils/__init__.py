"""Functional parts of BAKE, usable without the registry."""
from .batch_gather import ensemble_world_size, gather_ensemble_batch
from .cuda_graphs import CUDAGraphCache
from .distillation import (PrecomputedGradient, distillation_terms,
                           gathered_terms, local_terms)
from .knowledge_ensemble import knowledge_ensemble, propagate, soften

__all__ = [
    'knowledge_ensemble', 'propagate', 'soften', 'gather_ensemble_batch',
    'ensemble_world_size', 'CUDAGraphCache', 'PrecomputedGradient',
    'distillation_terms', 'local_terms', 'gathered_terms'
]
