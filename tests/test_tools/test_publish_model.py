"""tools/model_converters/publish_model.py on a real BAKE training run.

A one-epoch run of the Fashion-MNIST BAKE config on 320 real images (the
real mmengine runner; data from the shared ``fashion_mnist_small_root``
fixture) writes a checkpoint; the tool publishes it; a subprocess that
never imports mmbake loads the release into the plain
config (``LinearClsHead``) with ``torch.load(weights_only=True)`` and
``strict=True``, gets the trained model's logits, and gets the run's test
accuracy back from mmpretrain's own ``tools/test.py``.
"""
import hashlib
import os
import os.path as osp
import re
import sys
import textwrap

import pytest
import torch

from tests.script_utils import load_script

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'model_converters', 'publish_model.py')
BAKE_CONFIG = osp.join(REPO, 'configs', 'bake',
                       'resnet18_1xb64_fashion-mnist.py')
PLAIN_CONFIG = osp.join(REPO, 'configs', 'fashion_mnist',
                        'resnet18_1xb64-vanilla_fashion-mnist.py')
SUBPROCESS_TIMEOUT_S = 300


def tiny_run_options(data_root: str, work_dir: str) -> dict:
    """Overrides that shrink the Fashion-MNIST configs to a few seconds."""
    loader = dict(
        batch_size=32,
        num_workers=0,
        persistent_workers=False,
        dataset=dict(data_root=data_root))
    return dict(
        work_dir=work_dir,
        train_dataloader=loader,
        val_dataloader=loader,
        test_dataloader=loader,
        train_cfg=dict(max_epochs=1, val_interval=1),
        log_level='WARNING')


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory, fashion_mnist_small_root):
    """Train the BAKE config for one epoch; return paths and its results."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    tmp = tmp_path_factory.mktemp('publish')
    data_root = fashion_mnist_small_root
    cfg = Config.fromfile(BAKE_CONFIG)
    assert cfg.model.head.type == 'BAKEHead'
    cfg.merge_from_dict(tiny_run_options(data_root, str(tmp / 'run')))
    runner = Runner.from_cfg(cfg)
    runner.train()
    top1 = runner.test()['accuracy/top1']

    # Logits of the trained BAKE model on the first test batch, for the
    # comparison with the plain model built from the release.
    model = runner.model.eval()
    batch = model.data_preprocessor(next(iter(runner.test_dataloader)), False)
    with torch.no_grad():
        logits = model(batch['inputs'], mode='tensor')
    inputs_file = tmp / 'inputs.pth'
    torch.save(batch['inputs'], inputs_file)
    return dict(
        tmp=tmp,
        data_root=data_root,
        checkpoint=str(tmp / 'run' / 'epoch_1.pth'),
        top1=top1,
        inputs_file=str(inputs_file),
        logits=logits)


@pytest.fixture(scope='module')
def published(trained_run):
    """Publish the run's checkpoint through the command-line entry point."""
    out = trained_run['tmp'] / 'release' / 'bake_resnet18_fashion-mnist.pth'
    return load_script(TOOL).main([trained_run['checkpoint'], str(out)])


def test_release_name_and_hash(published):
    name = osp.basename(published)
    match = re.fullmatch(
        r'bake_resnet18_fashion-mnist_(\d{8})-([0-9a-f]{8})'
        r'\.pth', name)
    assert match, name
    with open(published, 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest()[:8] == match.group(2)
    # No temporary file is left beside the release.
    assert os.listdir(osp.dirname(published)) == [name]


def test_release_is_reproducible(trained_run, published):
    """Same checkpoint, same bytes and name, wherever it is written."""
    again = load_script(TOOL).publish_checkpoint(
        trained_run['checkpoint'],
        str(trained_run['tmp'] / 'again' / 'bake_resnet18_fashion-mnist'))
    assert osp.basename(again) == osp.basename(published)
    with open(again, 'rb') as f1, open(published, 'rb') as f2:
        assert f1.read() == f2.read()


def test_release_holds_only_weights_and_plain_meta(trained_run, published):
    release = torch.load(published, map_location='cpu', weights_only=True)
    assert set(release) == {'state_dict', 'meta'}

    original = torch.load(
        trained_run['checkpoint'], map_location='cpu', weights_only=False)
    # The run's checkpoint had training state that the release dropped.
    assert {'optimizer', 'message_hub', 'param_schedulers'} <= set(original)
    assert release['state_dict'].keys() == original['state_dict'].keys()
    for key, value in original['state_dict'].items():
        assert torch.equal(release['state_dict'][key], value), key

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


# Runs in a fresh interpreter; mmbake must never be imported there.
PLAIN_LOAD_SCRIPT = textwrap.dedent('''
    import json, runpy, sys
    import torch
    import mmpretrain
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    config, release, inputs_file, logits_file, work_dir, test_py = sys.argv[1:]
    cfg = Config.fromfile(config)
    assert cfg.model.head.type == 'LinearClsHead', cfg.model.head.type
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model).eval()
    checkpoint = torch.load(release, map_location='cpu', weights_only=True)
    model.load_state_dict(checkpoint['state_dict'], strict=True)
    inputs = torch.load(inputs_file, weights_only=True)
    with torch.no_grad():
        torch.save(model(inputs, mode='tensor'), logits_file)

    # mmpretrain's own tools/test.py, as a user without mmbake runs it.
    metrics_file = work_dir + '/metrics.json'
    sys.argv = [test_py, config, release, '--work-dir', work_dir,
                '--out', metrics_file, '--out-item', 'metrics']
    runpy.run_path(test_py, run_name='__main__')
    assert 'mmbake' not in sys.modules, 'mmbake was imported'
    print('TOP1', json.load(open(metrics_file))['accuracy/top1'])
''')


def load_in_plain_mmpretrain(run_tool, tmp, data_root: str, release: str,
                             inputs_file: str) -> tuple:
    """Run :data:`PLAIN_LOAD_SCRIPT` on ``release``: the logits of the
    inputs and the top-1 of mmpretrain's own ``tools/test.py``.

    The config is the plain twin of the BAKE config with the tiny data. Its
    base runtime loads mmbake through ``custom_imports`` and names mmbake's
    ``SafeCheckpointHook``; a user without mmbake has neither, so the
    import is emptied and the hook is mmengine's ``CheckpointHook`` here.
    """
    import mmpretrain
    test_py = osp.join(
        osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'test.py')
    if not osp.isfile(test_py):
        pytest.skip(f'mmpretrain ships no tools/test.py at {test_py}')
    config = tmp / 'plain_config.py'
    options = tiny_run_options(data_root, str(tmp / 'plain'))
    options['default_hooks'] = dict(checkpoint=dict(type='CheckpointHook'))
    config.write_text(
        f'_base_ = [{PLAIN_CONFIG!r}]\n'
        'custom_imports = dict(imports=[], allow_failed_imports=False)\n' +
        ''.join(f'{k} = {v!r}\n' for k, v in options.items()))
    logits_file = tmp / 'plain_logits.pth'
    proc = run_tool([
        sys.executable, '-c', PLAIN_LOAD_SCRIPT,
        str(config), release, inputs_file,
        str(logits_file),
        str(tmp / 'plain'), test_py
    ],
                    timeout=SUBPROCESS_TIMEOUT_S,
                    cwd=str(tmp))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    top1 = float(re.search(r'^TOP1 (\S+)$', proc.stdout, re.M).group(1))
    return torch.load(logits_file, weights_only=True), top1


def test_plain_mmpretrain_loads_release(trained_run, published, run_tool):
    logits, top1 = load_in_plain_mmpretrain(run_tool, trained_run['tmp'],
                                            trained_run['data_root'],
                                            published,
                                            trained_run['inputs_file'])
    torch.testing.assert_close(logits, trained_run['logits'])
    assert top1 == pytest.approx(trained_run['top1'], abs=1e-6)
