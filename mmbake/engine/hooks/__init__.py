"""Training hooks of mmbake."""
from .safe_checkpoint_hook import SafeCheckpointHook
from .soft_target_hook import SoftTargetVisualizationHook

__all__ = ['SafeCheckpointHook', 'SoftTargetVisualizationHook']
