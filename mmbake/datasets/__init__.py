"""Datasets-side parts of mmbake: the class-aware batch sampler, and the
centre crop of the authors' (pycls) test pipeline."""
from .samplers import *  # noqa: F401,F403
from .transforms import *  # noqa: F401,F403
