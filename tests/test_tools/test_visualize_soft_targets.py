"""tools/analysis_tools/visualize_soft_targets.py on a tiny real checkpoint.

A BAKE model is trained for one epoch on 320 real Fashion-MNIST images
through tools/train.py; the tool then draws two class-aware batches from
that checkpoint.
"""
import os.path as osp
import re
import sys

import pytest

from tests.script_utils import load_script

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
TOOL = osp.join(REPO_ROOT, 'tools', 'analysis_tools',
                'visualize_soft_targets.py')
BAKE_CONFIG = osp.join(REPO_ROOT, 'configs', 'bake',
                       'resnet18_1xb64_fashion-mnist.py')


def test_draws_from_a_trained_checkpoint(tmp_path, call_tool, tiny_cfg_options,
                                         fashion_mnist_small_root):
    work_dir = str(tmp_path / 'work')
    trained = call_tool([
        sys.executable, TRAIN, BAKE_CONFIG, '--work-dir', work_dir,
        '--cfg-options', *tiny_cfg_options
    ])
    assert trained.returncode == 0, trained.stderr[-3000:]
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(checkpoint)

    out_dir = str(tmp_path / 'pictures')
    drawn = call_tool([
        sys.executable, TOOL, BAKE_CONFIG, checkpoint, '--out-dir', out_dir,
        '--num-batches', '2', '--batch-size', '16', '--max-images', '8',
        '--ncols', '4', '--cfg-options', *tiny_cfg_options
    ],
                      timeout=180)
    assert drawn.returncode == 0, drawn.stderr[-3000:]
    paths = [osp.join(out_dir, f'soft_targets_batch{i}.png') for i in (0, 1)]
    wrote = [
        line for line in drawn.stdout.splitlines() if line.startswith('Wrote ')
    ]
    assert wrote == [f'Wrote {path}' for path in paths]
    assert drawn.stdout.count('same_class_affinity=') == 2

    import matplotlib.image as mpimg
    for path in paths:
        image = mpimg.imread(path)
        # Two rows of four cells (8 images, --ncols 4).
        assert image.shape[0] > 400 and image.shape[1] > 400
        assert image[..., :3].std() > 0.05
    assert mpimg.imread(paths[0]).tobytes() != mpimg.imread(paths[1]).tobytes()

    # The tool's model is the runner's model: in eval mode it reproduces
    # the validation top-1 that training printed for this checkpoint (this
    # needs the config's normalisation in the model, see build_model).
    runner_top1 = float(
        re.findall(r'Final top-1 \(val, epoch 1\): (\d+\.\d\d)',
                   trained.stdout)[-1])
    assert _eval_top1(checkpoint, fashion_mnist_small_root) == \
        pytest.approx(runner_top1, abs=0.006)


def _eval_top1(checkpoint: str, data_root: str) -> float:
    """Top-1 (%) of the tool's model on the small root's test images."""
    import torch
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    import mmbake  # noqa: F401

    cfg = Config.fromfile(BAKE_CONFIG)
    init_default_scope('mmpretrain')
    model = load_script(TOOL).build_model(cfg, checkpoint)
    assert not model.training
    # The config's normalisation, as the runner applies it.
    torch.testing.assert_close(model.data_preprocessor.mean.flatten(),
                               torch.tensor(cfg.data_preprocessor.mean))
    torch.testing.assert_close(model.data_preprocessor.std.flatten(),
                               torch.tensor(cfg.data_preprocessor.std))
    test_cfg = cfg.test_dataloader.dataset.copy()
    test_cfg.data_root = data_root
    dataset = DATASETS.build(test_cfg)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(dataset), 100):
            batch = pseudo_collate([
                dataset[i]
                for i in range(start, min(start + 100, len(dataset)))
            ])
            for sample in model.test_step(batch):
                correct += int(sample.pred_label == sample.gt_label)
    return 100.0 * correct / len(dataset)


@pytest.mark.parametrize('extra, message', [
    (['--num-batches', '0'], '--num-batches must be >= 1'),
    (['--omega', '1.0'], '--omega must be in'),
    (['--temperature', '0'], '--temperature must be > 0'),
])
def test_rejects_bad_arguments(tmp_path, capsys, extra, message):
    tool = load_script(TOOL)
    checkpoint = tmp_path / 'fake.pth'
    checkpoint.write_bytes(b'')
    with pytest.raises(SystemExit) as exc:
        tool.parse_args([BAKE_CONFIG, str(checkpoint)] + extra)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_rejects_missing_checkpoint(capsys):
    tool = load_script(TOOL)
    with pytest.raises(SystemExit):
        tool.parse_args([BAKE_CONFIG, '/no/such/file.pth'])
    assert 'checkpoint file not found' in capsys.readouterr().err
