"""Every config file under ``configs/`` has a name of its own.

``mim train mmbake NAME.py`` (openmim) resolves a config by its file name
inside the installed package and refuses a name that two folders share
("multiple config files with same name"), so a duplicate makes one of the
two configs unreachable by name. mmpretrain keeps its names unique for the
same reason.
"""
import os
import os.path as osp
from collections import defaultdict
from typing import Dict, List

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(REPO, 'configs')


def config_files_by_name() -> Dict[str, List[str]]:
    """Map each ``.py`` file name under ``configs/`` to its paths.

    Returns:
        dict[str, list[str]]: File name -> paths relative to ``configs/``.
    """
    found: Dict[str, List[str]] = defaultdict(list)
    for folder, _, files in os.walk(CONFIGS):
        for name in files:
            if name.endswith('.py'):
                found[name].append(
                    osp.relpath(osp.join(folder, name), CONFIGS))
    return found


def test_no_two_configs_share_a_file_name():
    found = config_files_by_name()
    # The walk must see the tree, or the check below proves nothing.
    assert 'resnet18_1xb64_fashion-mnist.py' in found
    assert 'resnet18_1xb64-vanilla_fashion-mnist.py' in found
    shared = {name: sorted(paths) for name, paths in found.items()
              if len(paths) > 1}
    assert shared == {}
