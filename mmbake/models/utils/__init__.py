"""Functional parts of BAKE, usable without the registry."""
from .batch_gather import gather_ensemble_batch
from .knowledge_ensemble import knowledge_ensemble, propagate

__all__ = ['knowledge_ensemble', 'propagate', 'gather_ensemble_batch']
