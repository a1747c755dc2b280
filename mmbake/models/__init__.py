"""Model-side parts of mmbake: the BAKE heads and knowledge ensembling."""
from .heads import *  # noqa: F401,F403
from .utils import *  # noqa: F401,F403
