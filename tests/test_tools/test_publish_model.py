"""tools/model_converters/publish_model.py: the release of the shared real
BAKE run (tests/test_engine/test_hooks/bake_run.py) holds the weights and
plain metadata only; plain mmpretrain reads it: test_safe_checkpoint_hook.
"""
import glob
import hashlib
import os
import os.path as osp
import re

import pytest
import torch

from tests.script_utils import load_script
from tests.test_engine.test_hooks.bake_run import bake_run

TOOL = 'tools/model_converters/publish_model.py'


@pytest.fixture(scope='module')
def run(tmp_path_factory, fashion_mnist_small_root):
    return bake_run(tmp_path_factory, fashion_mnist_small_root)


def test_release_name_hash_and_reproducibility(run, tmp_path):
    published = run['release']  # published by bake_run
    name = osp.basename(published)
    match = re.fullmatch(r'release_(\d{8})-([0-9a-f]{8})\.pth', name)
    assert match, name
    with open(published, 'rb') as f:
        data = f.read()
    assert hashlib.sha256(data).hexdigest()[:8] == match.group(2)
    # No temporary file is left beside the release.
    assert glob.glob(osp.join(osp.dirname(published), '.*')) == []
    # Same checkpoint, same bytes and name, wherever it is written.
    again = load_script(TOOL).main([run['epoch_2'], str(tmp_path / 'release')])
    assert osp.basename(again) == name and os.listdir(tmp_path) == [name]
    with open(again, 'rb') as f:
        assert f.read() == data


def test_release_holds_only_weights_and_plain_meta(run):
    release = torch.load(run['release'], weights_only=True)
    assert set(release) == {'state_dict', 'meta'}

    original = torch.load(run['epoch_2'])
    # The run's checkpoint had training state that the release dropped.
    assert {'optimizer', 'message_hub', 'param_schedulers'} <= set(original)
    torch.testing.assert_close(release['state_dict'], original['state_dict'])

    meta = release['meta']
    assert meta['dataset_meta']['classes'][:2] == ('T-shirt/top', 'Trouser')
    for key in ('epoch', 'iter', 'seed', 'cfg', 'mmengine_version'):
        assert meta[key] == original['meta'][key], key
    assert 'mmpretrain_version' in meta and 'mmbake_version' in meta


def test_sanitize_keeps_plain_data_and_drops_objects():
    tool = load_script(TOOL)
    import numpy as np

    dropped = []
    meta = dict(
        classes=('a', 'b'),
        nested=dict(count=np.int64(3), mean=np.array([0.5, 0.25])),
        items=[1, 2.0, None, True, object()],
        fn=len)
    out = tool.sanitize(meta, 'meta', dropped)
    assert out == dict(
        classes=('a', 'b'),
        nested=dict(count=3, mean=[0.5, 0.25]),
        items=[1, 2.0, None, True])
    assert type(out['nested']['count']) is int
    assert dropped == [
        'meta.items[4] (object)', 'meta.fn (builtin_function_or_method)'
    ]


def test_rejects_checkpoint_without_weights(tmp_path, capsys):
    tool = load_script(TOOL)
    bad = tmp_path / 'bad.pth'
    torch.save(dict(meta=dict(epoch=1), optimizer=dict()), bad)
    with pytest.raises(SystemExit) as exc:
        tool.main([str(bad), str(tmp_path / 'out.pth')])
    assert exc.value.code == 2  # bad input, as for the other tools
    assert 'no "state_dict"' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [bad]
