"""Data transforms for mmpretrain pipelines."""
from .pycls_center_crop import PyclsCenterCrop

__all__ = ['PyclsCenterCrop']
