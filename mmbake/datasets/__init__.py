"""Datasets-side parts of mmbake: the class-aware batch sampler."""
from .samplers import *  # noqa: F401,F403
