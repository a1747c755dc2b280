"""Data transforms for mmpretrain pipelines."""
from .pycls_center_crop import PyclsCenterCrop
from .to_grayscale import ToGrayscale

__all__ = ['PyclsCenterCrop', 'ToGrayscale']
