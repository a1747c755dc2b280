"""tools/analysis_tools/calibrate.py on the zoo's trained Fashion-MNIST model.

The zoo publishes that model calibrated; multiplying its final layer back by
the recorded temperature gives the trained BAKE model (under-confident),
which is calibrated here on 320 real training images; the folded file must
give the original logits divided by T and the same class for every image,
keep its keys, load in plain mmpretrain without mmbake, and bad input must
end with one ``error:`` line, exit status 2 and no file written.
"""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS

from mmbake.models import make_bake_head
from tests.script_utils import REPO_ROOT, load_script
from tests.test_tools.test_publish_model import (PLAIN_CONFIG,
                                                 load_in_plain_mmpretrain,
                                                 tiny_run_options)

TOOL = 'tools/analysis_tools/calibrate.py'
CONFIG = osp.join(REPO_ROOT, 'configs', 'fashion_mnist',
                  'resnet18_1xb64-heldout_fashion-mnist.py')
(RELEASED, ) = glob.glob(
    osp.join(REPO_ROOT, 'checkpoints', 'bake_resnet18_1xb64_fashion-mnist_*'))
FC = ('head.fc.weight', 'head.fc.bias')


def test_the_released_model_is_calibrated_on_held_out_images():
    fit = torch.load(RELEASED, weights_only=True)['meta']['calibration']
    assert fit['num_images'] == 5000 and fit['changed'] == list(FC)
    # Training images 50,000-54,999; the model trained on the first 10,000.
    assert (fit['dataset']['type'], fit['dataset']['fold'],
            fit['dataset']['num_splits']) == ('KFoldDataset', 10, 12)
    assert fit['dataset']['dataset']['split'] == 'train'
    assert fit['after']['nll'] < fit['before']['nll']
    assert fit['after']['top1'] == fit['before']['top1']


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> str:
    """The trained model before calibration, from the released file."""
    checkpoint = torch.load(RELEASED, weights_only=True)
    temperature = checkpoint['meta'].pop('calibration')['temperature']
    for key in FC:
        checkpoint['state_dict'][key] = checkpoint['state_dict'][key] * \
            temperature
    path = str(tmp_path_factory.mktemp('trained') / 'trained.pth')
    torch.save(checkpoint, path)
    return path


def heldout_options(data_root, num_splits=1, fold=0):
    """The small data root's training images (all 320 by default)."""
    return [
        f'val_dataloader.dataset.dataset.data_root={data_root}',
        f'val_dataloader.dataset.num_splits={num_splits}',
        f'val_dataloader.dataset.fold={fold}'
    ]


def calibrate(checkpoint, out, options, capsys):
    """Run the tool's ``main``; return (exit status, stdout, stderr)."""
    argv = [CONFIG, checkpoint, '--out', str(out)]
    argv += ['--cfg-options', *options] if options else []
    try:
        load_script(TOOL).main(argv)
        status = 0
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def logits_of(state_dict, data_root):
    """Logits of the plain model with ``state_dict`` on the 200 test
    images of the small data root, its inputs and the labels."""
    from mmengine.runner import Runner

    cfg = Config.fromfile(PLAIN_CONFIG)
    loader = tiny_run_options(data_root, '')['test_dataloader']
    cfg.merge_from_dict(dict(test_dataloader=dict(loader, batch_size=200)))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(
            dict(cfg.model, data_preprocessor=cfg.data_preprocessor)).eval()
        assert type(model.head) is LinearClsHead
        model.load_state_dict(state_dict, strict=True)
        (batch, ) = Runner.build_dataloader(cfg.test_dataloader)
    data = model.data_preprocessor(batch, False)
    labels = torch.tensor([int(s.gt_label) for s in data['data_samples']])
    with torch.no_grad():
        return model(data['inputs'], mode='tensor'), data['inputs'], labels


@pytest.fixture(scope='module')
def calibrated(trained, fashion_mnist_small_root, tmp_path_factory):
    """The zoo model calibrated on the small root's 320 training images,
    and the logits of the original and the folded file on its test
    images."""
    tmp = tmp_path_factory.mktemp('calibrate')
    out = tmp / 'calibrated.pth'
    load_script(TOOL).main([
        CONFIG, trained, '--out',
        str(out), '--cfg-options', 'model.head.type=BAKEHead',
        *heldout_options(fashion_mnist_small_root)
    ])
    original = torch.load(trained, weights_only=True)
    folded = torch.load(out, weights_only=True)
    logits, inputs, labels = logits_of(original['state_dict'],
                                       fashion_mnist_small_root)
    folded_logits = logits_of(folded['state_dict'],
                              fashion_mnist_small_root)[0]
    return dict(
        tmp=tmp,
        out=str(out),
        root=fashion_mnist_small_root,
        original=original,
        folded=folded,
        inputs=inputs,
        logits=logits,
        folded_logits=folded_logits,
        top1=100.0 * float((logits.argmax(1) == labels).double().mean()))


def test_folded_file_divides_the_logits_by_t(calibrated):
    original, folded = calibrated['original'], calibrated['folded']
    assert set(folded) == {'state_dict', 'meta'}
    fit = folded['meta']['calibration']
    temperature = fit['temperature']
    # BAKE's scores are under-confident: the fitted T sharpens them.
    assert 0.3 < temperature < 0.9
    assert fit['changed'] == ['head.fc.weight', 'head.fc.bias']
    assert fit['num_images'] == 320 and fit['dataloader'] == 'val_dataloader'
    assert fit['dataset']['type'] == 'KFoldDataset'
    assert fit['after']['nll'] < fit['before']['nll']
    assert fit['after']['top1'] == fit['before']['top1']
    assert fit['predictions_unchanged'] == 320
    # The original meta is kept beside the record.
    assert folded['meta']['dataset_meta'] == original['meta']['dataset_meta']

    before, after = original['state_dict'], folded['state_dict']
    assert {k: v.shape for k, v in after.items()} == \
        {k: v.shape for k, v in before.items()}
    for key, value in before.items():
        if key in fit['changed']:
            torch.testing.assert_close(after[key], value / temperature)
        else:
            assert torch.equal(after[key], value), key

    logits = calibrated['logits']
    torch.testing.assert_close(
        calibrated['folded_logits'],
        logits / temperature,
        rtol=1e-5,
        atol=1e-5)
    assert torch.equal(calibrated['folded_logits'].argmax(1), logits.argmax(1))


def test_plain_mmpretrain_loads_the_calibrated_file(calibrated, run_tool):
    """In a fresh interpreter without mmbake: ``LinearClsHead`` config,
    weights-only strict load, the folded logits, and mmpretrain's own
    ``tools/test.py`` gives the original model's top-1."""
    inputs_file = str(calibrated['tmp'] / 'inputs.pth')
    torch.save(calibrated['inputs'], inputs_file)
    logits, top1 = load_in_plain_mmpretrain(run_tool, calibrated['tmp'],
                                            calibrated['root'],
                                            calibrated['out'], inputs_file)
    torch.testing.assert_close(logits, calibrated['folded_logits'])
    assert top1 == pytest.approx(calibrated['top1'], abs=1e-6)


class Shifted(LinearClsHead):
    """Logits one more than the final layer's output."""

    def forward(self, feats):
        return super().forward(feats) + 1.0


def test_bad_input_writes_nothing(trained, fashion_mnist_small_root, tmp_path,
                                  capsys):
    out = tmp_path / 'out.pth'
    root = fashion_mnist_small_root

    # 27 images (fold 11 of 12 of 320: 293-319): too few.
    status, _, err = calibrate(trained, out, heldout_options(root, 12, 11),
                               capsys)
    assert status == 2 and 'has 27 images, too few' in err
    assert err.count('error:') == 1

    # A head family without one final layer (multi-label) ...
    status, _, err = calibrate(
        trained, out,
        heldout_options(root) + ['model.head.type=MultiLabelLinearClsHead'],
        capsys)
    assert status == 2
    assert 'MultiLabelLinearClsHead is not a head whose logits' in err
    # ... and a BAKE head whose logits are not its final layer's output.
    MODELS.register_module(
        name='BAKEShiftedTestHead', module=make_bake_head(Shifted), force=True)
    status, _, err = calibrate(
        trained, out,
        heldout_options(root) + ['model.head.type=BAKEShiftedTestHead'],
        capsys)
    assert status == 2
    assert 'are not the output of its final linear layer (head.fc)' in err

    # Weights that make every logit NaN: no finite temperature.
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint['state_dict']['head.fc.bias'][:] = float('nan')
    broken = str(tmp_path / 'nan.pth')
    torch.save(checkpoint, broken)
    status, _, err = calibrate(broken, out, heldout_options(root), capsys)
    assert status == 2 and 'logits must be finite' in err

    # A calibrated file: calibrating it again would compound temperatures.
    status, _, err = calibrate(RELEASED, out, heldout_options(root), capsys)
    assert status == 2 and 'is calibrated already (temperature 0.5' in err

    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['nan.pth']


def test_an_existing_out_file_is_never_replaced(trained, tmp_path, capsys):
    out = tmp_path / 'out.pth'
    out.write_bytes(b'keep me')
    status, _, err = calibrate(trained, out, [], capsys)
    assert status == 2 and 'exists; give a new path' in err
    assert out.read_bytes() == b'keep me'
