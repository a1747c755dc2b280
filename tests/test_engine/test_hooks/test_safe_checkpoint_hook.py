"""SafeCheckpointHook's checkpoints load with torch's weights-only default.

On the shared BAKE run (``bake_run.py``), nothing added to torch's
allowlist: ``torch.load``, ``init_model``, ``get_model`` and
``ImageClassificationInferencer`` read the training checkpoint with mmbake;
a process that never imports mmbake (the plain config, ``LinearClsHead``,
whose keys a BAKE head shares) reads it, its release (``publish_model.py``)
and its calibrated copy (``calibrate.py``) with ``torch.load``,
``init_model``, the inferencer and mmpretrain's own ``tools/test.py``.
mmpretrain's own ``--resume`` from it: ``test_mmpretrain_tools.py``.
"""
import copy
import json
import os.path as osp
import sys
import textwrap

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer, MessageHub, MMLogger
from mmengine.runner import FlexibleRunner

from mmbake.engine.hooks import SafeCheckpointHook
from mmbake.utils import PLAIN_TAG, load_checkpoint_weights_only
from tests.script_utils import REPO_ROOT, load_script
from tests.test_engine.test_hooks.bake_run import (PLAIN_CONFIG, bake_run,
                                                   first_test_images)

PUBLISH = 'tools/model_converters/publish_model.py'
CALIBRATE = 'tools/analysis_tools/calibrate.py'
HELDOUT_CONFIG = osp.join(REPO_ROOT, 'configs', 'fashion_mnist',
                          'resnet18_1xb64-heldout_fashion-mnist.py')


@pytest.fixture(scope='module')
def run(tmp_path_factory, fashion_mnist_small_root):
    return bake_run(tmp_path_factory, fashion_mnist_small_root)


def test_checkpoints_hold_tensors_and_plain_data(run):
    for path in (run['epoch_1'], run['epoch_2']):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) \
            == []
        plain = torch.load(path)  # torch's default: weights only
    loss = plain['message_hub']['log_scalars']['train/loss']
    assert loss[PLAIN_TAG] == 'HistoryBuffer'
    assert loss['log_history'][PLAIN_TAG] == 'numpy.ndarray'
    # Rebuilt as mmengine saves them, by mmbake's loader and by the hook
    # (before resume reads them: the message hub takes them back).
    rebuilt = load_checkpoint_weights_only(path)
    SafeCheckpointHook().after_load_checkpoint(None, plain)
    for i, checkpoint in enumerate((rebuilt, plain)):
        state = checkpoint['message_hub']
        assert type(state['log_scalars']['train/loss']) is HistoryBuffer
        assert type(state['runtime_info']['eta']) is np.float64
        hub = MessageHub.get_instance(f'resumed_{i}')
        hub.load_state_dict(state)
        assert hub.get_scalar('train/loss').current() == \
            float(loss['log_history']['data'][-1])
    torch.testing.assert_close(rebuilt['state_dict'], plain['state_dict'])


class Foreign:
    """What another hook might add: no weights-only form."""


def test_foreign_objects_keep_mmengine_format_with_one_warning(run, tmp_path):
    mmengine_format = load_checkpoint_weights_only(run['epoch_1'])
    log = tmp_path / 'log.txt'
    MMLogger.get_instance(f'{tmp_path.name}', log_file=str(log))
    hook = SafeCheckpointHook()
    for _ in range(2):
        checkpoint = dict(copy.deepcopy(mmengine_format), extra=[Foreign()])
        hook.before_save_checkpoint(None, checkpoint)
        assert type(checkpoint['message_hub']['log_scalars']['train/loss']) \
            is HistoryBuffer
    assert log.read_text().count("checkpoint['extra'][0] (Foreign) has no "
                                 'form that torch') == 1
    # That format, and meta['config'], come back from after_load_checkpoint
    # as they are (without the config, which resume would run).
    checkpoint['meta']['config'] = 'import os'
    hook.after_load_checkpoint(None, checkpoint)
    assert 'config' not in checkpoint['meta']
    assert type(checkpoint['message_hub']['runtime_info']['eta']) is \
        np.float64
    # Without the foreign object, the same content becomes plain again.
    del checkpoint['extra']
    hook.before_save_checkpoint(None, checkpoint)
    torch.save(checkpoint, tmp_path / 'plain.pth')
    assert torch.load(tmp_path / 'plain.pth')['meta']['epoch'] == 1


def test_flexible_runner_is_refused_before_training(run, tmp_path):
    cfg = Config.fromfile(run['config'])
    cfg.work_dir = str(tmp_path)
    with pytest.raises(TypeError, match="use mmengine's CheckpointHook"):
        SafeCheckpointHook().before_train(FlexibleRunner.from_cfg(cfg))


# Runs in a fresh interpreter; mmbake must never be imported there.
PLAIN_SCRIPT = textwrap.dedent('''
    import json, runpy, sys
    import torch
    from mmpretrain import ImageClassificationInferencer, init_model

    config, images_file, out_file, test_py, work_dir, *paths = sys.argv[1:]
    images, results = torch.load(images_file), {}
    for i, path in enumerate(paths):
        torch.load(path)  # torch's default: weights only, nothing allowed
        model = init_model(config, path, device='cpu')
        data = model.data_preprocessor(dict(inputs=list(images)), False)
        with torch.no_grad():
            logits = model(data['inputs'], mode='tensor')
        inferencer = ImageClassificationInferencer(
            config, pretrained=path, device='cpu')
        scores = inferencer(images[0, 0].numpy())[0]['pred_scores']
        metrics = f'{work_dir}/metrics_{i}.json'
        sys.argv = [test_py, config, path, '--work-dir', work_dir, '--out',
                    metrics, '--out-item', 'metrics', '--cfg-options',
                    f'experiment_name=plain_{i}']
        runpy.run_path(test_py, run_name='__main__')
        results[path] = dict(
            logits=logits.tolist(), scores=scores.tolist(),
            top1=json.load(open(metrics))['accuracy/top1'])
    assert 'mmbake' not in sys.modules, 'mmbake was imported'
    json.dump(results, open(out_file, 'w'))
''')


def test_plain_mmpretrain_reads_the_run_release_and_calibrated_file(
        run, tmp_path, run_tool, capsys):
    import mmpretrain
    from mmpretrain import ImageClassificationInferencer, get_model, init_model

    test_py = osp.join(
        osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'test.py')
    if not osp.isfile(test_py):
        pytest.skip(f'mmpretrain ships no tools/test.py at {test_py}')
    trained = run['epoch_1']
    release = load_script(PUBLISH).main([trained, str(tmp_path / 'release')])
    calibrated = str(tmp_path / 'calibrated.pth')
    load_script(CALIBRATE).main([
        HELDOUT_CONFIG, trained, '--out', calibrated, '--cfg-options',
        'model.head.type=BAKEHead', 'val_dataloader.dataset.num_splits=1',
        'val_dataloader.dataset.fold=0',
        f'val_dataloader.dataset.dataset.data_root={run["data_root"]}'
    ])
    capsys.readouterr()
    temperature = torch.load(calibrated)['meta']['calibration']['temperature']

    # With mmbake, the BAKE config.
    images = first_test_images(run['data_root'], 8)
    model = init_model(run['config'], trained, device='cpu')
    data = model.data_preprocessor(dict(inputs=list(images)), False)
    with torch.no_grad():
        logits = model(data['inputs'], mode='tensor')
    again = get_model(run['config'], pretrained=trained, device='cpu')
    torch.testing.assert_close(again.state_dict(), model.state_dict())
    scores = ImageClassificationInferencer(
        run['config'], pretrained=trained,
        device='cpu')(images[0, 0].numpy())[0]['pred_scores']
    torch.testing.assert_close(
        torch.from_numpy(scores), logits[0].softmax(0), rtol=1e-5, atol=1e-6)

    # Without mmbake: the plain config, its base's mmbake parts replaced.
    config = tmp_path / 'plain.py'
    config.write_text(
        f'_base_ = [{PLAIN_CONFIG!r}]\n'
        'custom_imports = dict(imports=[], allow_failed_imports=False)\n'
        "default_hooks = dict(checkpoint=dict(type='CheckpointHook'))\n"
        f'test_dataloader = dict(num_workers=0, persistent_workers=False, '
        f'dataset=dict(data_root={run["data_root"]!r}))\n')
    torch.save(images, tmp_path / 'images.pth')
    result = run_tool([
        sys.executable, '-c', PLAIN_SCRIPT,
        str(config),
        str(tmp_path / 'images.pth'),
        str(tmp_path / 'out.json'), test_py,
        str(tmp_path / 'test'), trained, release, calibrated
    ],
                      cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    plain = json.loads((tmp_path / 'out.json').read_text())
    for path, divisor in ((trained, 1), (release, 1), (calibrated,
                                                       temperature)):
        torch.testing.assert_close(
            torch.tensor(plain[path]['logits']),
            logits / divisor,
            rtol=1e-4,
            atol=1e-4)
        torch.testing.assert_close(
            torch.tensor(plain[path]['scores']),
            (logits[0] / divisor).softmax(0),
            rtol=1e-4,
            atol=1e-5)
        # Calibration keeps every predicted class: the same top-1.
        assert plain[path]['top1'] == plain[trained]['top1']
