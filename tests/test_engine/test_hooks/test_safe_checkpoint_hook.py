"""SafeCheckpointHook's checkpoints load with torch's weights-only default.

On the shared BAKE run (``bake_run.py``), nothing added to torch's
allowlist: ``torch.load``, ``init_model`` (``get_model``) and
``ImageClassificationInferencer`` read the training checkpoint; so do they
and mmpretrain's own ``tools/test.py``, on it, its release and its
calibrated copy, in a process that never imports mmbake (the plain config:
``LinearClsHead``, whose keys a BAKE head shares). mmpretrain's own
``--resume`` from it: ``tests/test_tools/test_mmpretrain_tools.py``.
"""
import json
import os.path as osp
import sys
import textwrap
from collections import Counter
from functools import partial

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub, MMLogger
from mmengine.runner import FlexibleRunner

from mmbake.engine.hooks import SafeCheckpointHook
from mmbake.utils import PLAIN_TAG, load_checkpoint_weights_only
from tests.test_engine.test_hooks.bake_run import (PLAIN_CONFIG, bake_run,
                                                   first_test_images)


@pytest.fixture(scope='module')
def run(tmp_path_factory, fashion_mnist_small_root):
    return bake_run(tmp_path_factory, fashion_mnist_small_root)


def test_checkpoints_hold_tensors_and_plain_data(run):
    for path in (run['epoch_1'], run['epoch_2']):
        assert not torch.serialization.get_unsafe_globals_in_checkpoint(path)
    plain = torch.load(path)  # torch's default: weights only
    loss = plain['message_hub']['log_scalars']['train/loss']
    assert loss[PLAIN_TAG] == 'HistoryBuffer'
    assert loss['log_history'][PLAIN_TAG] == 'numpy.ndarray'
    # Rebuilt by the hook before resume reads them (and by mmbake's
    # loader: tests/test_utils/test_checkpoint.py), as mmengine saves them.
    SafeCheckpointHook().after_load_checkpoint(None, plain)
    state = plain['message_hub']
    assert type(state['runtime_info']['eta']) is np.float64
    hub = MessageHub.get_instance('resumed')
    hub.load_state_dict(state)  # skips what is not a HistoryBuffer
    assert hub.get_scalar('train/loss').current() == \
        float(loss['log_history']['data'][-1])


class Foreign:
    """What another hook might add: no weights-only form."""


def test_foreign_objects_keep_mmengine_format_with_one_warning(run, tmp_path):
    log = tmp_path / 'log.txt'
    MMLogger.get_instance(tmp_path.name, log_file=str(log))
    hook = SafeCheckpointHook()
    for extra in ([Foreign()], [Foreign()], Counter([3])):  # MultiStepLR's
        checkpoint = load_checkpoint_weights_only(run['epoch_1'])
        checkpoint['extra'] = extra
        hook.before_save_checkpoint(None, checkpoint)
        if type(extra) is list:  # mmengine's format, as after_load takes it
            hook.after_load_checkpoint(None, checkpoint)
            info = checkpoint['message_hub']['runtime_info']
            assert type(info['eta']) is np.float64
    assert log.read_text().count("checkpoint['extra'][0] (Foreign) has no "
                                 'form') == 1
    torch.save(checkpoint, tmp_path / 'plain.pth')
    assert torch.load(tmp_path / 'plain.pth')['extra'] == Counter([3])


def test_flexible_runner_is_refused_before_training(run, tmp_path):
    cfg = Config.fromfile(run['config'])
    cfg.work_dir = str(tmp_path)
    with pytest.raises(TypeError, match="use mmengine's CheckpointHook"):
        SafeCheckpointHook().before_train(FlexibleRunner.from_cfg(cfg))


# Runs in a fresh interpreter, in a folder with images.pth; mmbake must
# never be imported there.
PLAIN_SCRIPT = textwrap.dedent('''
    import json, runpy, sys
    import torch
    from mmpretrain import ImageClassificationInferencer, init_model

    (config, test_py, *paths), results = sys.argv[1:], {}
    images = torch.load('images.pth')
    for i, path in enumerate(paths):
        torch.load(path)  # torch's default: weights only, nothing allowed
        model = init_model(config, path, device='cpu')
        assert type(model.head).__name__ == 'LinearClsHead'
        data = model.data_preprocessor(dict(inputs=list(images)), False)
        with torch.no_grad():
            logits = model(data['inputs'], mode='tensor')
        scores = ImageClassificationInferencer(
            config, pretrained=path,
            device='cpu')(images[0, 0].numpy())[0]['pred_scores']
        sys.argv = [test_py, config, path, '--work-dir', '.', '--out',
                    f'top1_{i}.json', '--out-item', 'metrics',
                    '--cfg-options', f'experiment_name=plain_{i}']
        runpy.run_path(test_py, run_name='__main__')
        results[path] = dict(
            logits=logits.tolist(), scores=scores.tolist(),
            top1=json.load(open(f'top1_{i}.json'))['accuracy/top1'])
    assert 'mmbake' not in sys.modules, 'mmbake was imported'
    print('RESULTS', json.dumps(results))
''')


def test_plain_mmpretrain_reads_the_run_release_and_calibrated_file(
        run, tmp_path, run_tool):
    import mmpretrain
    from mmpretrain import ImageClassificationInferencer, init_model

    test_py = osp.join(
        osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'test.py')
    if not osp.isfile(test_py):
        pytest.skip(f'mmpretrain ships no tools/test.py at {test_py}')
    paths = [run[k] for k in ('epoch_2', 'release', 'calibrated')]
    fit = torch.load(paths[2])['meta']['calibration']

    # With mmbake, the BAKE config.
    images = first_test_images(run['data_root'], 8)
    model = init_model(run['config'], paths[0], device='cpu')
    data = model.data_preprocessor(dict(inputs=list(images)), False)
    with torch.no_grad():
        logits = model(data['inputs'], mode='tensor')
    scores = ImageClassificationInferencer(
        run['config'], pretrained=paths[0],
        device='cpu')(images[0, 0].numpy())[0]['pred_scores']
    close = partial(torch.testing.assert_close, rtol=1e-4, atol=1e-5)
    close(torch.from_numpy(scores), logits[0].softmax(0))

    # Without mmbake: the plain config, its base's mmbake parts replaced.
    config = tmp_path / 'plain.py'
    config.write_text(
        f'_base_ = [{PLAIN_CONFIG!r}]\n'
        'custom_imports = dict(imports=[], allow_failed_imports=False)\n'
        "default_hooks = dict(checkpoint=dict(type='CheckpointHook'))\n"
        f'test_dataloader = dict(num_workers=0, persistent_workers=False, '
        f'dataset=dict(data_root={run["data_root"]!r}))\n')
    torch.save(images, tmp_path / 'images.pth')
    result = run_tool(
        [sys.executable, '-c', PLAIN_SCRIPT,
         str(config), test_py, *paths],
        cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    plain = json.loads(result.stdout.split('RESULTS ')[-1])
    for path, t in zip(paths, (1, 1, fit['temperature'])):
        close(torch.tensor(plain[path]['logits']), logits / t)
        close(torch.tensor(plain[path]['scores']), (logits[0] / t).softmax(0))
        # Calibration keeps every predicted class: the same top-1.
        assert plain[path]['top1'] == plain[paths[0]]['top1']
