"""BAKE's soft targets on real batches: numbers and pictures."""
from .soft_target_batches import (batch_affinity, build_class_aware_batches,
                                  format_stats, predict_soft_targets,
                                  soft_target_stats)
from .soft_targets import draw_soft_targets, visualize_batches

__all__ = [
    'build_class_aware_batches', 'predict_soft_targets', 'draw_soft_targets',
    'visualize_batches', 'batch_affinity', 'soft_target_stats', 'format_stats'
]
