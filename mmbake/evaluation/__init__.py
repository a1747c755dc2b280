"""Evaluation-side parts of mmbake: calibration metrics."""
from .metrics import *  # noqa: F401,F403
