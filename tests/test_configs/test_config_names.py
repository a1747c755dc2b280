"""Every config file under ``configs/`` has a name of its own.

``mim train mmbake NAME.py`` (openmim 0.3.9) resolves a config that is not
a path by its file name, searching the whole installed package
(``mmbake/``, whose ``.mim/`` holds ``configs/`` and ``tools/``), and
refuses a name found twice ("multiple config files with same name"). So a
config's name must be unique among the configs and must not be the name of
a module or tool either. mmpretrain keeps its names unique for the same
reason.
"""
import os
import os.path as osp
from collections import defaultdict
from typing import Dict, List

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def python_files_by_name(folder: str) -> Dict[str, List[str]]:
    """Map each ``.py`` file name under ``folder`` to its paths.

    ``mmbake/.mim`` (a copy of configs and tools left by a non-editable
    install) is skipped.

    Args:
        folder (str): Path relative to the repository root.

    Returns:
        dict[str, list[str]]: File name -> paths relative to the root.
    """
    found: Dict[str, List[str]] = defaultdict(list)
    for parent, dirs, files in os.walk(osp.join(REPO, folder)):
        dirs[:] = [d for d in dirs if d not in ('.mim', '__pycache__')]
        for name in files:
            if name.endswith('.py'):
                found[name].append(osp.relpath(osp.join(parent, name), REPO))
    return found


def test_no_two_configs_share_a_file_name():
    configs = python_files_by_name('configs')
    # The walk must see the tree, or the check below proves nothing.
    assert 'resnet18_1xb64_fashion-mnist.py' in configs
    assert 'resnet18_1xb64-vanilla_fashion-mnist.py' in configs
    shared = {
        name: sorted(paths)
        for name, paths in configs.items() if len(paths) > 1
    }
    assert shared == {}


def test_no_module_or_tool_has_a_config_name():
    configs = python_files_by_name('configs')
    for folder in ('mmbake', 'tools'):
        others = python_files_by_name(folder)
        assert 'train.py' in others or '__init__.py' in others
        clashes = {name: others[name] for name in configs if name in others}
        assert clashes == {}, folder
