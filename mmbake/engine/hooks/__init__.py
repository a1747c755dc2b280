"""Training hooks of mmbake."""
from .check_labels_hook import CheckLabelsHook
from .safe_checkpoint_hook import SafeCheckpointHook
from .soft_target_hook import SoftTargetVisualizationHook

__all__ = [
    'CheckLabelsHook', 'SafeCheckpointHook', 'SoftTargetVisualizationHook'
]
