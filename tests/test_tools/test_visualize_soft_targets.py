"""BAKE's soft targets and calibration on one tiny real training run.

The BAKE Fashion-MNIST config trains for 3 epochs on the small real data
root (320 training images, batch 16) through tools/train.py, with
``SoftTargetVisualizationHook`` drawing every 2 epochs (pictures after
epochs 2 and 3, the last, not after 1) and ``Calibration`` beside
``Accuracy`` in the validation. tools/analysis_tools/visualize_soft_targets.py
then draws two class-aware batches from the final checkpoint, and its model
reproduces the top-1, NLL and ECE that the run's validation logged.
"""
import json
import os.path as osp
import sys
from glob import glob

import matplotlib.image as mpimg
import pytest
import torch

from tests.script_utils import REPO_ROOT, load_script

TOOL = osp.join(REPO_ROOT, 'tools', 'analysis_tools',
                'visualize_soft_targets.py')
BAKE_CONFIG = osp.join(REPO_ROOT, 'configs', 'bake',
                       'resnet18_1xb64_fashion-mnist.py')


def test_hook_tool_and_calibration_on_one_run(tmp_path, call_tool,
                                              tiny_cfg_options,
                                              fashion_mnist_small_root):
    config = tmp_path / 'bake_with_hook.py'
    # mmbake.engine is imported explicitly, so the hook is registered even
    # where the package root does not import it.
    config.write_text(
        f"_base_ = [{BAKE_CONFIG!r}]\n"
        "custom_imports = dict(imports=['mmbake', 'mmbake.engine'], "
        "allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='SoftTargetVisualizationHook', "
        "interval=2, max_images=8, batch_size=16)]\n"
        "val_evaluator = [dict(type='Accuracy', topk=(1, )), "
        "dict(type='Calibration')]\n")
    work_dir = tmp_path / 'work'
    trained = call_tool([
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'train.py'),
        str(config), '--work-dir',
        str(work_dir), '--cfg-options', *tiny_cfg_options,
        'train_cfg.max_epochs=3', 'train_cfg.val_interval=3'
    ])
    assert trained.returncode == 0, trained.stderr[-3000:]
    drawn = sorted(p.name for p in (work_dir / 'soft_targets').iterdir())
    assert drawn == ['epoch_2_batch0.png', 'epoch_3_batch0.png']
    log = trained.stdout + trained.stderr
    assert log.count('Soft-target picture ') == 2
    assert 'same_class_affinity=' in log
    image = mpimg.imread(str(work_dir / 'soft_targets' / drawn[1]))
    # 8 images in one row of 8 cells, each with its text block.
    assert image.shape[1] > image.shape[0] > 200
    assert image[..., :3].std() > 0.05

    checkpoint = str(work_dir / 'epoch_3.pth')
    out_dir = str(tmp_path / 'pictures')
    tool = call_tool([
        sys.executable, TOOL,
        str(config), checkpoint, '--out-dir', out_dir, '--num-batches', '2',
        '--batch-size', '16', '--max-images', '8', '--ncols', '4',
        '--cfg-options', *tiny_cfg_options
    ])
    assert tool.returncode == 0, tool.stderr[-3000:]
    paths = [osp.join(out_dir, f'soft_targets_batch{i}.png') for i in (0, 1)]
    assert [ln for ln in tool.stdout.splitlines()
            if ln.startswith('Wrote ')] == [f'Wrote {p}' for p in paths]
    assert tool.stdout.count('same_class_affinity=') == 2
    images = [mpimg.imread(path) for path in paths]
    for image in images:  # two rows of four cells (8 images, --ncols 4)
        assert image.shape[0] > 400 and image.shape[1] > 400
        assert image[..., :3].std() > 0.05
    assert images[0].tobytes() != images[1].tobytes()

    # The tool's model is the runner's model: in eval mode it reproduces
    # the validation after the last epoch (this needs the config's
    # normalisation in the model, see the tool's main).
    (scalars, ) = glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))
    with open(scalars) as f:
        logged = [json.loads(line) for line in f][-1]
    assert logged['step'] == 3
    scores, labels = tool_scores(checkpoint, fashion_mnist_small_root)
    from mmbake.evaluation import Calibration
    expected = Calibration.calculate(scores, labels)
    top1 = 100 * float((scores.argmax(1) == labels).double().mean())
    assert logged['accuracy/top1'] == pytest.approx(top1, abs=1e-4)
    for key in ('nll', 'ece', 'confidence_gap'):
        assert logged[f'calibration/{key}'] == pytest.approx(
            expected[key], rel=1e-5, abs=1e-6), key
    assert 0.0 < expected['ece'] < 100.0


def tool_scores(checkpoint: str, data_root: str) -> tuple:
    """Scores (float64) and labels of the small root's 200 test images by
    the model the tool builds."""
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmpretrain.registry import DATASETS

    cfg = Config.fromfile(BAKE_CONFIG)
    cfg.test_dataloader.dataset.data_root = data_root
    with torch.no_grad():
        model = load_script(TOOL).build_model(cfg, checkpoint)
        assert not model.training
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
        samples = model.test_step(pseudo_collate(list(dataset)))
    assert len(samples) == 200
    return (torch.stack([s.pred_score for s in samples]).double(),
            torch.cat([s.gt_label for s in samples]))


@pytest.mark.parametrize('extra, message', [
    (['--num-batches', '0'], '--num-batches must be >= 1'),
    (['--omega', '1.0'], '--omega must be in'),
    (['--temperature', '0'], '--temperature must be > 0'),
    ([], 'checkpoint file not found'),
])
def test_rejects_bad_arguments(tmp_path, capsys, extra, message):
    checkpoint = tmp_path / 'fake.pth'
    if extra:
        checkpoint.write_bytes(b'')
    with pytest.raises(SystemExit) as exc:
        load_script(TOOL).parse_args([BAKE_CONFIG, str(checkpoint)] + extra)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
