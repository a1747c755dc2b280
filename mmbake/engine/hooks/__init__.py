"""Training hooks of mmbake."""
from .soft_target_hook import SoftTargetVisualizationHook

__all__ = ['SoftTargetVisualizationHook']
