"""Training hooks of mmbake."""
from .soft_target_hook import (SoftTargetVisualizationHook, batch_affinity,
                               build_class_aware_batches, draw_soft_targets,
                               predict_soft_targets, soft_target_stats,
                               visualize_batches)

__all__ = [
    'SoftTargetVisualizationHook', 'build_class_aware_batches',
    'predict_soft_targets', 'draw_soft_targets', 'visualize_batches',
    'batch_affinity', 'soft_target_stats'
]
