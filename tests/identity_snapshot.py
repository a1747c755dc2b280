"""What an import or a tool run replaces in the libraries it runs on.

A snapshot holds every attribute of every loaded module of torch, mmengine,
mmpretrain, mmcv and builtins, and every entry of the ``__dict__`` of each
class those modules define, by identity (the objects themselves, so that
no id is reused). ``python -m tests.identity_snapshot [--preload M,...]
[--then MODULE] [-- SCRIPT ARGS...]`` prints, as JSON, what ``import
mmbake`` and then the script (run in-process) replaced or added, but for
what the libraries change themselves (:func:`libraries_own`), and whether
torch's weights-only allowlist changed; with ``--then``, the same for
importing ``MODULE`` afterwards (under ``then``).
"""
import argparse
import contextlib
import importlib
import json
import os.path as osp
import runpy
import sys
import types
from typing import Dict, Tuple

Key = Tuple[str, ...]

LIBRARIES = ('torch', 'mmengine', 'mmpretrain', 'mmcv', 'builtins')


def watched(name: str) -> bool:
    """Whether module ``name`` is one of the libraries' watched."""
    return name.split('.')[0] in LIBRARIES


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
    """What torch, mmengine and Python change themselves in a training."""
    return (
        # copyreg's and warnings' caches; torch's DataLoader noting that it
        # installed its SIGCHLD handler.
        key[-1]
        in ('__slotnames__', '__warningregistry__', '_SIGCHLD_handler_set')
        # A submodule imported later becomes an attribute of its package.
        or isinstance(value, types.ModuleType)
        # torch wraps Optimizer subclasses' step for its profiler when the
        # first optimizer of a class is built (Optimizer._patch_step_function).
        or (key[0].startswith('torch.optim.') and key[-1] == 'step')
        # Rebound by torch's safe_globals (compared: allowlist_changed).
        or key[-1] == '_marked_safe_globals_set'
        # Restored by DefaultScope.overwrite_default_scope as a new dict.
        or key[-2:] == ('DefaultScope', '_instance_dict')
        # Rebound, sorted, by the public CheckpointLoader.register_scheme;
        # compared apart (schemes_added).
        or key[-2:] == ('CheckpointLoader', '_schemes'))


def changes(before: Dict[Key, object], after: Dict[Key, object],
            allowlist: set) -> dict:
    """Keys of ``before`` rebound in ``after``, keys new in ``after`` of a
    module or class in ``before``, and whether the allowlist changed."""
    import torch
    owners = {key[:-1] for key in before}
    return dict(
        replaced=sorted('.'.join(k) for k, v in before.items()
                        if k in after and after[k] is not v
                        and not libraries_own(k, after[k])),
        added=sorted('.'.join(k) for k, v in after.items() if k not in before
                     and k[:-1] in owners and not libraries_own(k, v)),
        allowlist_changed=set(torch.serialization.get_safe_globals())
        != allowlist)


def report(stdout: str) -> dict:
    """The report printed by :func:`main`, from its output."""
    lines = [x for x in stdout.splitlines() if x.startswith('SNAPSHOT ')]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len('SNAPSHOT '):])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--preload', default='', help='M1,M2,...')
    parser.add_argument('--then', help='a module to import last')
    parser.add_argument('argv', nargs='*', help='-- SCRIPT ARGS...')
    args = parser.parse_args()
    for name in filter(None, args.preload.split(',')):
        with contextlib.suppress(Exception):  # optional parts of libraries
            importlib.import_module(name)
    import torch
    from mmengine.runner import CheckpointLoader
    allowlist = set(torch.serialization.get_safe_globals())
    before, schemes = snapshot(), set(CheckpointLoader._schemes)
    importlib.import_module('mmbake')
    if args.argv:
        # As for ``python SCRIPT``: its folder first on the path.
        sys.argv = list(args.argv)
        sys.path.insert(0, osp.dirname(osp.abspath(args.argv[0])))
        runpy.run_path(args.argv[0], run_name='__main__')
    after = snapshot()
    found = dict(
        changes(before, after, allowlist),
        schemes_added=sorted(set(CheckpointLoader._schemes) - schemes),
        watched_modules=sorted(filter(watched, sys.modules)))
    if args.then:
        allowlist = set(torch.serialization.get_safe_globals())
        importlib.import_module(args.then)
        found['then'] = changes(after, snapshot(), allowlist)
    print('SNAPSHOT ' + json.dumps(found))


if __name__ == '__main__':
    main()
