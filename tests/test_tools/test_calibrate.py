"""tools/analysis_tools/calibrate.py: the shared BAKE run's checkpoint,
calibrated on its 320 training images (test_engine/test_hooks/bake_run.py),
keeps its keys and classes, its final layer divided by T (logits divided by
T in plain mmpretrain: test_safe_checkpoint_hook.py); bad input ends with
one ``error:`` line, exit status 2 and no file written.
"""
import glob
import os.path as osp

import pytest
import torch
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS

from mmbake.models import make_bake_head
from tests.script_utils import REPO_ROOT, load_script
from tests.test_engine.test_hooks.bake_run import (HELDOUT_CONFIG, bake_run,
                                                   heldout_options)

TOOL = 'tools/analysis_tools/calibrate.py'
(RELEASED, ) = glob.glob(
    osp.join(REPO_ROOT, 'checkpoints', 'bake_resnet18_1xb64_fashion-mnist_*'))
FC = ['head.fc.weight', 'head.fc.bias']


@pytest.fixture(scope='module')
def run(tmp_path_factory, fashion_mnist_small_root):
    return bake_run(tmp_path_factory, fashion_mnist_small_root)


def test_the_released_model_is_calibrated_on_held_out_images():
    fit = torch.load(RELEASED, weights_only=True)['meta']['calibration']
    assert fit['num_images'] == 5000 and fit['changed'] == FC
    # Training images 50,000-54,999; the model trained on the first 10,000.
    assert (fit['dataset']['type'], fit['dataset']['fold'],
            fit['dataset']['num_splits']) == ('KFoldDataset', 10, 12)
    assert fit['dataset']['dataset']['split'] == 'train'
    assert fit['after']['nll'] < fit['before']['nll']
    assert fit['after']['top1'] == fit['before']['top1']
    # BAKE's scores are under-confident: the fitted T sharpens them.
    assert 0.3 < fit['temperature'] < 0.9


def test_folded_file_divides_the_final_layer_by_t(run):
    original = torch.load(run['epoch_2'])
    folded = torch.load(run['calibrated'])
    assert set(folded) == {'state_dict', 'meta'}
    fit = folded['meta']['calibration']
    assert fit['changed'] == FC and fit['dataset']['type'] == 'KFoldDataset'
    assert fit['num_images'] == 320 and fit['dataloader'] == 'val_dataloader'
    assert fit['after']['nll'] < fit['before']['nll']
    assert fit['after']['top1'] == fit['before']['top1']
    assert fit['predictions_unchanged'] == 320
    # The original meta is kept beside the record.
    assert folded['meta']['dataset_meta'] == original['meta']['dataset_meta']
    before, after = original['state_dict'], folded['state_dict']
    assert after.keys() == before.keys()
    for key, value in before.items():
        if key in FC:
            torch.testing.assert_close(after[key], value / fit['temperature'])
        else:
            assert torch.equal(after[key], value), key


def calibrate(checkpoint, out, options, capsys):
    """Run the tool's ``main``, which must exit: (status, stdout, stderr)."""
    argv = [HELDOUT_CONFIG, checkpoint, '--out', str(out)]
    argv += ['--cfg-options', *options] if options else []
    with pytest.raises(SystemExit) as exc:
        load_script(TOOL).main(argv)
    return (exc.value.code, *capsys.readouterr())


class Shifted(LinearClsHead):
    """Logits one more than the final layer's output."""

    def forward(self, feats):
        return super().forward(feats) + 1.0


def test_bad_input_writes_nothing(run, tmp_path, capsys):
    out, trained, root = tmp_path / 'out.pth', run['epoch_2'], run['data_root']
    MODELS.register_module(
        name='BAKEShiftedTestHead', module=make_bake_head(Shifted), force=True)
    checkpoint = torch.load(trained)
    checkpoint['state_dict']['head.fc.bias'][:] = float('nan')
    torch.save(checkpoint, tmp_path / 'nan.pth')
    heldout = heldout_options(root)
    cases = [
        # 27 images (fold 11 of 12 of 320: 293-319): too few.
        (trained, heldout_options(root, 12, 11), 'has 27 images, too few'),
        # A head family without one final layer (multi-label), and a BAKE
        # head whose logits are not its final layer's output.
        (trained, heldout + ['model.head.type=MultiLabelLinearClsHead'],
         'MultiLabelLinearClsHead is not a head whose logits'),
        (trained, heldout + ['model.head.type=BAKEShiftedTestHead'],
         'are not the output of its final linear layer (head.fc)'),
        # Weights that make every logit NaN: no finite temperature.
        (tmp_path / 'nan.pth', heldout, 'logits must be finite'),
        # A calibrated file: calibrating again would compound temperatures.
        (RELEASED, heldout, 'is calibrated already (temperature 0.5'),
    ]
    for path, options, message in cases:
        status, _, err = calibrate(str(path), out, options, capsys)
        assert status == 2 and message in err and err.count('error:') == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['nan.pth']
    # An existing --out is never replaced.
    out.write_bytes(b'keep me')
    status, _, err = calibrate(trained, out, [], capsys)
    assert status == 2 and 'exists; give a new path' in err
    assert out.read_bytes() == b'keep me'
