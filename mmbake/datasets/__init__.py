"""Datasets-side parts of mmbake: the class-aware batch sampler, the centre
crop of the authors' (pycls) test pipeline, and the conversion to gray that
lets one-channel models classify image files."""
from .samplers import *  # noqa: F401,F403
from .transforms import *  # noqa: F401,F403
