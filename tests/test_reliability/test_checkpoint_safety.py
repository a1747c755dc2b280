"""Checkpoints are read, never executed; weights-only loading stays on.

A crafted checkpoint tries to run code (it would create a marker file)
when resumed or tested, through a pickled callable (``builtins.exec``),
which torch's weights-only unpickler refuses. Python source in
``meta['config']``, which mmengine 0.10.7's ``Runner.resume`` would
execute: tests/test_tools/test_mmpretrain_tools.py.

Training checkpoints and releases load with ``torch.load``'s default in a
process without mmbake: tests/test_engine/test_hooks/.
"""
import ast
import glob
import os.path as osp
import sys

import pytest
import torch

from tests.test_engine.test_hooks.bake_run import bake_run
from .tool_runs import REPO_ROOT, TEST, TRAIN


class RunsCode:
    """Unpickles as ``exec(source)``: what a malicious checkpoint holds."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self):
        return exec, (self.source, )


@pytest.fixture(scope='module')
def run(tmp_path_factory, fashion_mnist_small_root):
    return bake_run(tmp_path_factory, fashion_mnist_small_root)


def test_pickled_code_is_never_run(tmp_path, run, call_tool):
    # The shared run's epoch-1 checkpoint with code in it: refused by the
    # weights-only unpickler, with a message instead of a traceback, by
    # both tools.
    marker, pickled = str(tmp_path / 'ran'), str(tmp_path / 'pickled.pth')
    checkpoint = torch.load(run['epoch_1'])
    checkpoint['meta']['note'] = RunsCode(f'open({marker!r}, "w").close()')
    torch.save(checkpoint, pickled)
    work_dir, config = str(tmp_path / 'work'), run['config']
    for cmd in ([TRAIN, config, '--work-dir', work_dir, '--resume',
                 pickled], [TEST, config, pickled, '--work-dir', work_dir]):
        result = call_tool([sys.executable, *cmd], timeout=120)
        assert result.returncode == 2, result.stderr[-3000:]
        assert (f'error: {pickled} holds objects that '
                'torch.load(weights_only=True) refuses') in result.stderr
        assert 'Unsupported global: GLOBAL ' in result.stderr
        assert 'Traceback' not in result.stderr
        assert not osp.exists(marker)


def turns_weights_only_off(node: ast.AST) -> bool:
    """``weights_only=False``, or the variable's name as a value
    (``os.environ[...] = '1'``), not a docstring that mentions it."""
    if isinstance(node, ast.keyword) and node.arg == 'weights_only':
        return getattr(node.value, 'value', None) is False
    return isinstance(node, ast.Constant) and \
        node.value == 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'


def test_plugin_never_turns_the_weights_only_check_off():
    sources = [
        path for pattern in ('mmbake/**/*.py', 'tools/**/*.py')
        for path in glob.glob(osp.join(REPO_ROOT, pattern), recursive=True)
    ]
    found = []
    for path in sources:
        with open(path) as f:
            found += [
                f'{path}:{node.lineno}'
                for node in ast.walk(ast.parse(f.read(), path))
                if turns_weights_only_off(node)
            ]
    assert sources and not found, found
