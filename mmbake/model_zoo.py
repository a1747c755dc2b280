"""Make mmbake's model zoo visible to ``mmpretrain.list_models``/``get_model``.

mmpretrain keeps its pre-defined models in ``mmpretrain.apis.ModelHub``,
filled from ``model-index.yml`` files. :func:`register_bake_models` adds
mmbake's own index (``model-index.yml``, which imports
``configs/bake/metafile.yml``) with config paths made absolute, so that
after ``import mmbake``::

    import mmpretrain
    mmpretrain.list_models('*bake*')
    model = mmpretrain.get_model('bake_resnet50_8xb32_imagenet',
                                 pretrained='path/or/url.pth')

The index and the configs live at the repository root in a source checkout
(editable install) and in ``mmbake/.mim/`` in an installed wheel (copied
there by ``setup.py``). Registering parses only mmbake's small metafile,
not mmpretrain's index, and mmpretrain imports the parser anyway.
"""
import os.path as osp
from typing import List, Optional

from mmpretrain.apis import ModelHub

MODEL_INDEX = 'model-index.yml'
# A root is accepted only if it holds the index and mmbake's metafile, so
# that an unrelated ``model-index.yml`` one level above the package (the
# site-packages folder of a normal install) is never taken for ours.
_METAFILE = osp.join('configs', 'bake', 'metafile.yml')

_registered: List[str] = []


def find_model_zoo_root(package_dir: Optional[str] = None) -> Optional[str]:
    """Locate the folder that holds mmbake's ``model-index.yml``.

    The repository root (editable install) is preferred to ``mmbake/.mim``
    (wheel install): in a source checkout ``.mim`` can be a stale copy left
    by an earlier ``pip install .``.

    Args:
        package_dir (str, optional): The ``mmbake`` package folder. Defaults
            to the folder of this module.

    Returns:
        str | None: The folder whose ``model-index.yml`` and ``configs/``
        describe mmbake's models, or None if neither place has them.
    """
    if package_dir is None:
        package_dir = osp.dirname(osp.abspath(__file__))
    for root in (osp.dirname(package_dir), osp.join(package_dir, '.mim')):
        if (osp.isfile(osp.join(root, MODEL_INDEX))
                and osp.isfile(osp.join(root, _METAFILE))):
            return root
    return None


def register_bake_models(root: Optional[str] = None) -> List[str]:
    """Register mmbake's models in mmpretrain's ``ModelHub``.

    Safe to call more than once: later calls return the names registered by
    the first. ``ModelHub`` itself refuses a name registered twice.

    Args:
        root (str, optional): Folder with ``model-index.yml`` and the
            ``configs/`` it points at. Defaults to
            :func:`find_model_zoo_root`.

    Returns:
        list[str]: The registered model names (lower case, as
        ``list_models`` reports them); empty if no model index was found.
    """
    if _registered:
        return list(_registered)
    root = find_model_zoo_root() if root is None else root
    if root is None:
        return []
    before = set(ModelHub._models_dict)
    # Config paths in the metafile are relative to the root, the way
    # mmpretrain's own index is relative to ``mmpretrain/.mim``.
    ModelHub.register_model_index(
        osp.join(root, MODEL_INDEX), config_prefix=root)
    _registered.extend(sorted(set(ModelHub._models_dict) - before))
    for name in _registered:
        # Weights shipped in the repository are listed relative to the root,
        # like the configs; URLs and absolute paths stay as they are.
        metainfo = ModelHub._models_dict[name]
        weights = metainfo.weights
        if weights and '://' not in weights and not osp.isabs(weights):
            metainfo.weights = osp.join(root, weights)
    return list(_registered)
