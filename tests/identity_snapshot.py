"""What an import or a tool run replaces in the libraries it runs on.

A snapshot holds every attribute of every loaded module of torch, mmengine,
mmpretrain, mmcv and builtins, and every entry of the ``__dict__`` of each
class those modules define, by identity (the objects themselves, so that
no id is reused). Run in a fresh interpreter (``python -m
tests.identity_snapshot``) it prints, as JSON, what ``import mmbake`` (or
the module named by ``--import``) and then the command line given after
``--`` (a tool, run in-process) replaced or added, leaving out what the
libraries change themselves (:func:`libraries_own`), and whether torch's
weights-only allowlist changed; with ``--then MODULE``, also what importing
``MODULE`` afterwards replaced and added (under ``then``).
"""
import argparse
import importlib
import json
import os.path as osp
import runpy
import sys
import types
from typing import Dict, List, Tuple

PREFIXES = ('torch', 'mmengine', 'mmpretrain', 'mmcv', 'builtins')

Key = Tuple[str, ...]


def watched(name: str) -> bool:
    """Whether module ``name`` belongs to the libraries watched."""
    return name.split('.')[0] in PREFIXES


def snapshot() -> Dict[Key, object]:
    """Attributes of the loaded watched modules and of their classes."""
    found: Dict[Key, object] = {}
    for name, module in list(sys.modules.items()):
        if module is None or not watched(name):
            continue
        for attr, value in list(vars(module).items()):
            found[(name, attr)] = value
            if isinstance(value, type) and value.__module__ == name:
                for cls_attr, member in list(vars(value).items()):
                    found[(name, attr, cls_attr)] = member
    return found


def libraries_own(key: Key, value: object) -> bool:
    """Changes that torch, mmengine and Python make themselves while a
    model trains, with or without mmbake."""
    return (
        # copyreg's and warnings' caches.
        key[-1] in ('__slotnames__', '__warningregistry__')
        # A submodule imported later becomes an attribute of its package.
        or isinstance(value, types.ModuleType)
        # torch wraps Optimizer subclasses' step for its profiler when the
        # first optimizer of a class is built (Optimizer._patch_step_function).
        or (key[0].startswith('torch.optim.') and key[-1] == 'step')
        # torch's DataLoader notes that it installed its SIGCHLD handler.
        or key[-1] == '_SIGCHLD_handler_set'
        # Rebound by torch.serialization.safe_globals; its content is
        # compared apart (safe_globals() below).
        or key[-1] == '_marked_safe_globals_set'
        # Restored by DefaultScope.overwrite_default_scope as a new dict.
        or key[-2:] == ('DefaultScope', '_instance_dict')
        # Rebound, sorted, by every CheckpointLoader.register_scheme (the
        # public registration of a checkpoint prefix); its prefixes are
        # compared apart (schemes() below).
        or key[-2:] == ('CheckpointLoader', '_schemes'))


def replaced(before: Dict[Key, object], after: Dict[Key, object]) -> List[str]:
    """Keys of ``before`` whose object is another one in ``after``."""
    return sorted('.'.join(key) for key, value in before.items()
                  if key in after and after[key] is not value
                  and not libraries_own(key, after[key]))


def added(before: Dict[Key, object], after: Dict[Key, object]) -> List[str]:
    """Keys new in ``after`` whose module or class was in ``before``."""
    owners = {key[:-1] for key in before}
    return sorted('.'.join(key) for key, value in after.items()
                  if key not in before and key[:-1] in owners
                  and not libraries_own(key, value))


def safe_globals() -> List[str]:
    """torch's weights-only allowlist, as names."""
    import torch
    return sorted(map(str, torch.serialization.get_safe_globals()))


def schemes() -> List[str]:
    """The prefixes registered with mmengine's CheckpointLoader."""
    from mmengine.runner import CheckpointLoader
    return sorted(CheckpointLoader._schemes)


def report(stdout: str) -> dict:
    """The report printed by :func:`main`, from its output."""
    lines = [x for x in stdout.splitlines() if x.startswith('SNAPSHOT ')]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len('SNAPSHOT '):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        '--preload',
        default='',
        help='modules to import '
        'first, comma-separated')
    parser.add_argument('--import', dest='module', default='mmbake')
    parser.add_argument('--then', help='a module to import last')
    parser.add_argument('argv', nargs='*', help='-- SCRIPT ARGS...')
    args = parser.parse_args()
    for name in filter(None, args.preload.split(',')):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: B902 - optional parts of the libraries
            pass
    before, allowlist, prefixes = snapshot(), safe_globals(), schemes()
    importlib.import_module(args.module)
    if args.argv:
        # As for ``python SCRIPT``: its folder first on the path.
        sys.argv = list(args.argv)
        sys.path.insert(0, osp.dirname(osp.abspath(args.argv[0])))
        runpy.run_path(args.argv[0], run_name='__main__')
    after, allowlist_after = snapshot(), safe_globals()
    found = dict(
        replaced=replaced(before, after),
        added=added(before, after),
        allowlist_changed=allowlist_after != allowlist,
        schemes_added=sorted(set(schemes()) - set(prefixes)),
        watched_modules=sorted(m for m in sys.modules if watched(m)))
    if args.then:
        importlib.import_module(args.then)
        last = snapshot()
        found['then'] = dict(
            replaced=replaced(after, last),
            added=added(after, last),
            allowlist_changed=safe_globals() != allowlist_after)
    print('SNAPSHOT ' + json.dumps(found))


if __name__ == '__main__':
    main()
