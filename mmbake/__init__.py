"""mmbake: BAKE self-distillation as a plugin for mmpretrain.

Importing the package registers every mmbake type into mmpretrain's
registries (``mmpretrain.registry.MODELS``, ``DATA_SAMPLERS``,
``TRANSFORMS``, ``HOOKS`` and ``METRICS``), so that configs with
``default_scope='mmpretrain'`` find them after
``custom_imports=dict(imports=['mmbake'])``.
"""
from . import compat  # noqa: F401  (applies the narrow compatibility fixes)
from .datasets import *  # noqa: F401,F403
from .engine import *  # noqa: F401,F403
from .evaluation import *  # noqa: F401,F403
from .model_zoo import register_bake_models
from .models import *  # noqa: F401,F403
from .version import __version__, version_info

# mmpretrain.list_models('*bake*') and get_model('bake_...') find our zoo.
register_bake_models()

__all__ = ['__version__', 'version_info']
