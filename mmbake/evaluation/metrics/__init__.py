"""Metrics registered into mmpretrain's ``METRICS`` registry."""
from .calibration import Calibration

__all__ = ['Calibration']
