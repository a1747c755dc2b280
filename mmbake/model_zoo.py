"""Make mmbake's model zoo visible to ``mmpretrain.list_models``/``get_model``.

:func:`register_bake_models` adds mmbake's index (``model-index.yml``, which
imports ``configs/bake/metafile.yml``) to mmpretrain's ``ModelHub`` through
its public ``register_model_index``, config paths made absolute with
``config_prefix``, so that after ``import mmbake``::

    import mmpretrain
    mmpretrain.list_models('*bake*')
    model = mmpretrain.get_model('bake_resnet18_1xb64_fashion-mnist',
                                 pretrained=True)

Weights that ship with mmbake are listed as ``mmbake://<path in the zoo
root>``, a scheme registered with mmengine's ``CheckpointLoader``, and are
read with the weights-only unpickler. The index and the configs live at the
repository root in a source checkout (editable install) and in
``mmbake/.mim/`` in an installed wheel (copied there by ``setup.py``).
"""
import os.path as osp
from typing import Any, Dict, List, Optional

from mmengine.runner import CheckpointLoader
from mmpretrain.apis import ModelHub

MODEL_INDEX = 'model-index.yml'
# Prefix of the weights that ship with mmbake (configs/bake/metafile.yml).
SCHEME = 'mmbake://'
# A root is accepted only if it holds the index and mmbake's metafile, so
# that an unrelated ``model-index.yml`` one level above the package (the
# site-packages folder of a normal install) is never taken for ours.
_METAFILE = osp.join('configs', 'bake', 'metafile.yml')


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


def load_from_mmbake(filename: str,
                     map_location: Any = None) -> Dict[str, Any]:
    """The ``CheckpointLoader`` scheme of :data:`SCHEME`: a file of the zoo
    root, read weights-only onto the CPU (``map_location`` is not needed).
    mmengine logs the backend as this function's name without its first
    ten characters (``load_from_``): "Loads checkpoint by mmbake backend".

    Args:
        filename (str): ``mmbake://<path relative to the zoo root>``.
        map_location (Any): Unused; the weights are loaded on the CPU.

    Returns:
        dict: The checkpoint.
    """
    from .utils import load_checkpoint_weights_only

    root = find_model_zoo_root()
    if root is None:
        raise FileNotFoundError(f'{filename}: no mmbake model zoo root')
    return load_checkpoint_weights_only(osp.join(root, filename[len(SCHEME):]))


def register_bake_models(root: Optional[str] = None) -> List[str]:
    """Register mmbake's models in mmpretrain's ``ModelHub``, once.

    Args:
        root (str, optional): Folder with ``model-index.yml`` and the
            ``configs/`` it points at. Defaults to
            :func:`find_model_zoo_root`.

    Returns:
        list[str]: The model names of the index (lower case, as
        ``list_models`` reports them); empty if no index was found.
    """
    from modelindex import load

    root = find_model_zoo_root() if root is None else root
    if root is None:
        return []
    index_path = osp.join(root, MODEL_INDEX)
    index = load(index_path)
    index.build_models_with_collections()
    names = [model.name.lower() for model in index.models]
    if not all(ModelHub.has(name) for name in names):
        # Config paths in the metafile are relative to the root, the way
        # mmpretrain's own index is relative to ``mmpretrain/.mim``.
        ModelHub.register_model_index(index_path, config_prefix=root)
    CheckpointLoader.register_scheme(SCHEME, load_from_mmbake, force=True)
    return names
