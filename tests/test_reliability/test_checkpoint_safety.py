"""Checkpoints are read, never executed; weights-only loading stays on.

Two crafted checkpoints try to run code when resumed or tested: one
through a pickled callable (``builtins.exec``), which torch's weights-only
unpickler refuses, and one through ``meta['config']``, a plain string that
mmengine 0.10.7's ``Runner.resume`` would execute as a Python config. In
neither case may the code run (it would create a marker file).

Published checkpoints load with ``torch.load(weights_only=True)`` in a
process that never imports mmbake: ``test_plain_mmpretrain_loads_release``
in ``tests/test_tools/test_publish_model.py``.
"""
import ast
import glob
import os.path as osp
import sys

import pytest
import torch

from .tool_runs import BAKE_CONFIG, REPO_ROOT, TEST, TRAIN, load_checkpoint


class RunsCode:
    """Unpickles as ``exec(source)``: what a malicious checkpoint holds."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self):
        return exec, (self.source, )


def touch_source(path: str) -> str:
    """Python source that creates ``path``."""
    return f'open({path!r}, "w").close()\n'


@pytest.fixture
def trained_checkpoint(tmp_path, call_tool, tiny_cfg_options) -> str:
    """The epoch-1 checkpoint of a real one-epoch BAKE run."""
    work_dir = str(tmp_path / 'work')
    result = call_tool([
        sys.executable, TRAIN, BAKE_CONFIG, '--work-dir', work_dir,
        '--no-validate', '--cfg-options', *tiny_cfg_options
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    return osp.join(work_dir, 'epoch_1.pth')


def test_crafted_checkpoints_never_run_code(tmp_path, trained_checkpoint,
                                            call_tool, tiny_cfg_options):
    marker = str(tmp_path / 'code_ran')
    work_dir = osp.dirname(trained_checkpoint)

    # 1. A pickled callable: refused by the weights-only unpickler, with a
    # message instead of a traceback, by both tools.
    pickled = str(tmp_path / 'pickled_code.pth')
    checkpoint = load_checkpoint(trained_checkpoint)
    checkpoint['meta']['note'] = RunsCode(touch_source(marker))
    torch.save(checkpoint, pickled)
    for cmd in ([
            sys.executable, TRAIN, BAKE_CONFIG, '--work-dir', work_dir,
            '--resume', pickled
    ], [
            sys.executable, TEST, BAKE_CONFIG, pickled, '--work-dir',
            str(tmp_path / 'test')
    ]):
        result = call_tool([*cmd, '--cfg-options', *tiny_cfg_options],
                           timeout=120)
        assert result.returncode == 2, result.stderr[-3000:]
        assert (f'error: {pickled} holds objects that '
                'torch.load(weights_only=True) refuses') in result.stderr
        assert 'Unsupported global: GLOBAL ' in result.stderr
        assert 'Traceback' not in result.stderr
        assert not osp.exists(marker)

    # 2. Python source in meta['config'], a plain string: the resume
    # ignores it (SafeCheckpointHook) and trains on.
    as_config = str(tmp_path / 'config_code.pth')
    checkpoint = load_checkpoint(trained_checkpoint)
    checkpoint['meta']['config'] = touch_source(marker)
    torch.save(checkpoint, as_config)
    result = call_tool([
        sys.executable, TRAIN, BAKE_CONFIG, '--work-dir', work_dir,
        '--no-validate', '--resume', as_config, '--cfg-options',
        *tiny_cfg_options, 'train_cfg.max_epochs=2'
    ])
    out = result.stdout + result.stderr
    assert not osp.exists(marker)
    assert result.returncode == 0, out[-3000:]
    assert "ignoring meta['config']" in out
    assert 'resumed epoch: 1' in out


def weights_only_switches(path: str) -> list:
    """Places in a source file that turn torch's weights-only check off."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.keyword) and node.arg == 'weights_only'
                and isinstance(node.value, ast.Constant)
                and node.value.value is False):
            found.append(f'{path}:{node.value.lineno} weights_only=False')
        # The variable's name as a value (os.environ[...] = '1'), not a
        # docstring that mentions it.
        if (isinstance(node, ast.Constant)
                and node.value == 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'):
            found.append(f'{path}:{node.lineno} '
                         'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    return found


def test_plugin_never_turns_the_weights_only_check_off():
    sources = glob.glob(
        osp.join(REPO_ROOT, 'mmbake', '**', '*.py'), recursive=True)
    sources += glob.glob(
        osp.join(REPO_ROOT, 'tools', '**', '*.py'), recursive=True)
    assert sources
    found = [hit for path in sources for hit in weights_only_switches(path)]
    assert not found, found
