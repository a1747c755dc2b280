"""Training hooks of mmbake."""
from .check_labels_hook import CheckLabelsHook
from .precise_bn_hook import BatchSamplerPreciseBNHook
from .safe_checkpoint_hook import SafeCheckpointHook
from .soft_target_hook import SoftTargetVisualizationHook

__all__ = [
    'BatchSamplerPreciseBNHook', 'CheckLabelsHook', 'SafeCheckpointHook',
    'SoftTargetVisualizationHook'
]
