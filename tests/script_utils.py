"""Import a script of the repository by its path.

``tools/`` and ``benchmarks/`` are folders of scripts, not packages; tests
that call a script's functions directly import it from its file.
"""
import importlib.util
import os.path as osp
from types import ModuleType

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_script(path: str) -> ModuleType:
    """Import the script at ``path`` (absolute, or relative to the repo).

    Args:
        path (str): E.g. ``'tools/model_converters/publish_model.py'``.

    Returns:
        ModuleType: The freshly executed module.
    """
    path = osp.join(REPO_ROOT, path)
    name = osp.splitext(osp.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
