"""BAKE as plain functions, usable without the registry."""
from .batch_gather import EnsembleGroup
from .cuda_graphs import CUDAGraphs
from .knowledge_ensemble import (check_bake_args, distillation_kl,
                                 knowledge_ensemble)

__all__ = [
    'knowledge_ensemble', 'distillation_kl', 'check_bake_args', 'CUDAGraphs',
    'EnsembleGroup'
]
