"""Pictures of BAKE's soft targets."""
from .soft_targets import (batch_affinity, build_class_aware_batches,
                           draw_soft_targets, format_stats,
                           predict_soft_targets, soft_target_stats,
                           visualize_batches)

__all__ = [
    'build_class_aware_batches', 'predict_soft_targets', 'draw_soft_targets',
    'visualize_batches', 'batch_affinity', 'soft_target_stats', 'format_stats'
]
