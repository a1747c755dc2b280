"""Import a script of the repository by its path: ``tools/`` and
``benchmarks/`` are folders of scripts, not packages."""
import importlib.util
import os.path as osp
from types import ModuleType

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_script(path: str) -> ModuleType:
    """The freshly executed script at ``path`` (absolute, or relative to the
    repository, e.g. ``'tools/model_converters/publish_model.py'``)."""
    path = osp.join(REPO_ROOT, path)
    spec = importlib.util.spec_from_file_location(
        osp.splitext(osp.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
