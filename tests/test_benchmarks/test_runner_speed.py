"""The runner benchmark's generated ImageNet folder, read by mmpretrain's own
``ImageNet`` dataset and the BAKE ResNet-50 recipe's training pipeline."""
import os.path as osp

from mmengine.config import Config
from mmpretrain.datasets import ImageNet
from mmpretrain.registry import DATASETS

from tests.script_utils import REPO_ROOT, load_script

runner_speed = load_script('benchmarks/runner_speed.py')


def test_generated_jpegs_load_as_imagenet(tmp_path):
    root = str(tmp_path)
    runner_speed.write_images(root, classes=3, per_class=2, size=40)
    train = ImageNet(data_root=root, split='train')
    assert [train.get_data_info(i)['gt_label'] for i in range(6)] == \
        [0, 0, 1, 1, 2, 2]
    assert len(train) == 6 and len(ImageNet(data_root=root, split='val')) == 6
    assert train.get_data_info(0)['img_path'].endswith('.JPEG')

    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs/bake/resnet50_8xb32_imagenet.py'))
    dataset = cfg.train_dataloader.dataset
    dataset.update(data_root=root, _scope_='mmpretrain')
    sample = DATASETS.build(dataset)[5]
    assert tuple(sample['inputs'].shape) == (3, 224, 224)
    assert sample['data_samples'].gt_label.tolist() == [2]
