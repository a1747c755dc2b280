"""Batch samplers for BAKE."""
from .class_aware_batch_sampler import ClassAwareBatchSampler
from .labels import get_dataset_labels

__all__ = ['ClassAwareBatchSampler', 'get_dataset_labels']
