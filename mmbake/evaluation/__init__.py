"""Evaluation-side parts of mmbake: calibration metric, temperature scaling."""
from .metrics import *  # noqa: F401,F403
from .temperature_scaling import (final_linear, fit_temperature,
                                  fold_temperature)
