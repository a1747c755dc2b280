"""Engine-side parts of mmbake: training hooks."""
from .hooks import *  # noqa: F401,F403
