"""mmbake: BAKE self-distillation as a plugin for mmpretrain.

Importing the package only registers: every mmbake type goes into
mmpretrain's registries (``MODELS``, ``DATA_SAMPLERS``, ``TRANSFORMS``,
``HOOKS``, ``OPTIM_WRAPPERS`` and ``METRICS``), so that configs with
``default_scope='mmpretrain'`` find them after
``custom_imports=dict(imports=['mmbake'])``, and the model zoo into
mmpretrain's ``ModelHub``. Nothing of mmengine, mmpretrain or torch is
replaced (the opt-in :mod:`mmbake.compat` is imported only by name).
"""
# The subpackages register their types as they are imported. Imported as
# modules, not with *: mmbake.models.utils must not shadow mmbake.utils.
from . import datasets, engine, evaluation, models  # noqa: F401
from .model_zoo import register_bake_models
from .version import __version__, version_info

# mmpretrain.list_models('*bake*') and get_model('bake_...') find our zoo.
register_bake_models()

__all__ = ['__version__', 'version_info']
