"""Metrics registered into mmpretrain's ``METRICS`` registry."""
from .calibration import Calibration, reliability_bins

__all__ = ['Calibration', 'reliability_bins']
