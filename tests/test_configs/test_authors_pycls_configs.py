"""``configs/bake/*_authors-pycls_in1k.py``: the authors' recipe with the
network swapped and their test-time pipeline, checked against their own
steps run with pycls's functions (``pycls==0.1.1``, whose ``scale``,
``center_crop`` and ``color_norm`` are the authors' fork's) on JPEG files.
"""
import copy
import math
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope

from tests.script_utils import REPO_ROOT as REPO
from tests.script_utils import load_script
from tests.test_configs.test_bake_configs import (bake_config, changed_keys,
                                                  plain)

RECIPE = 'resnet50_8xb64-authors_imagenet.py'
CONVERTER = 'tools/model_converters/pycls_to_mmpretrain.py'
# Config -> the backbone it sets on top of the authors' ResNet-50 recipe
# (test_bake_configs.py: these are all the *_authors-pycls configs).
# yapf: disable
BACKBONES = {
    f'{arch}{depth}{x}_authors-pycls_in1k.py': dict(
        type='ResNeXt' if x else 'ResNet', depth=depth,
        **(dict(groups=32, width_per_group=4) if x else {}))
    for arch, depth, x in [('resnet', 50, ''), ('resnet', 101, ''),
                           ('resnet', 152, ''), ('resnext', 101, '-32x4d'),
                           ('resnext', 152, '-32x4d')]}
# yapf: enable


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_config_is_the_authors_recipe_with_their_test_pipeline(name):
    cfg = plain(bake_config(name).to_dict())
    backbone = cfg['model']['backbone']
    assert {k: backbone[k] for k in BACKBONES[name]} == BACKBONES[name]
    pipeline = cfg['pycls_test_pipeline']
    assert [t['type'] for t in pipeline] == [
        'LoadImageFromFile', 'ToNumpy', 'ResizeEdge', 'PyclsCenterCrop',
        'PackInputs'
    ]
    for loader in ('val_dataloader', 'test_dataloader'):
        assert cfg[loader]['dataset']['pipeline'] == pipeline
    assert changed_keys(cfg, plain(bake_config(RECIPE).to_dict())) <= {
        'pycls_test_pipeline', 'val_dataloader.dataset.pipeline',
        'test_dataloader.dataset.pipeline'
    } | {f'model.backbone.{k}'
         for k in BACKBONES[name]}


def test_converter_names_these_configs_for_their_architectures():
    """The config the converter prints builds the model it converts to."""
    from mmpretrain.registry import MODELS

    tool = load_script(CONVERTER)
    assert sorted(osp.basename(p)
                  for p in tool.CONFIGS.values()) == sorted(BACKBONES)
    for key, path in tool.CONFIGS.items():
        assert osp.isfile(osp.join(REPO, path)), path
        arch = tool.Architecture(*key, num_classes=1000)
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            from_config = MODELS.build(bake_config(osp.basename(path)).model)
            from_tool = MODELS.build(arch.model_cfg())
        assert [(k, v.shape) for k, v in from_config.state_dict().items()] == [
            (k, v.shape) for k, v in from_tool.state_dict().items()
        ], path


def authors_test_input(path: str) -> np.ndarray:
    """The network input of the authors' ImageNet loader (yxgeee/BAKE
    ``imagenet/pycls/datasets/imagenet.py``) at test time: PIL decode, RGB
    to BGR, float32, ``scale(256)``, ``center_crop(224)``, CHW, / 255,
    ``color_norm`` with their BGR statistics."""
    from PIL import Image
    from pycls.datasets import imagenet, transforms

    im = cv2.cvtColor(
        np.asarray(Image.open(path).convert('RGB')),
        cv2.COLOR_RGB2BGR).astype(np.float32)
    im = transforms.center_crop(224, transforms.scale(256, im))
    return transforms.color_norm(
        im.transpose([2, 0, 1]) / 255.0, imagenet._MEAN, imagenet._SD)


# (height, width): both resize paths (a short side already at 256 is left
# alone by pycls) and both orientations; the first three leave an odd
# margin around the crop where pycls's offset (rounded up) and mmcv's
# (rounded half to even) differ: 353 - 224 = 129, and
# floor(414 * 256 / 300) = 353; the last one an even margin.
SHAPES = [(256, 353), (353, 256), (300, 414), (256, 354)]


@pytest.mark.parametrize('shape', SHAPES)
def test_pipeline_gives_the_authors_network_input(shape, tmp_path):
    from mmcv.transforms import Compose
    from mmpretrain.registry import MODELS, TRANSFORMS

    rng = np.random.default_rng(sum(shape))
    # A smooth image with detail, so that a one-pixel shift shows.
    noise = rng.integers(0, 256, (shape[0] // 8, shape[1] // 8, 3), np.uint8)
    image = cv2.resize(noise, shape[::-1], interpolation=cv2.INTER_CUBIC)
    path = str(tmp_path / 'image.jpg')
    cv2.imwrite(path, image)

    cfg = bake_config('resnet50_authors-pycls_in1k.py')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pipeline = Compose([
            TRANSFORMS.build(t) for t in cfg.test_dataloader.dataset.pipeline
        ])
        preprocessor = MODELS.build(
            dict(cfg.data_preprocessor, type='ClsDataPreprocessor'))
    packed = pipeline(dict(img_path=path))
    ours = preprocessor(dict(inputs=[packed['inputs']]), False)['inputs'][0]

    theirs = authors_test_input(path)
    assert tuple(ours.shape) == theirs.shape == (3, 224, 224)
    # Their BGR input is our RGB input, channels reversed (the converter
    # reverses the stem's channels to match).
    theirs = torch.from_numpy(np.ascontiguousarray(theirs[::-1]))
    assert (ours - theirs).abs().max() < 1e-5

    # mmcv's CenterCrop would have cut elsewhere on these shapes.
    stock = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    (crop, ) = [
        i for i, t in enumerate(stock) if t['type'] == 'PyclsCenterCrop'
    ]
    stock[crop] = dict(type='CenterCrop', crop_size=224)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        stock = Compose([TRANSFORMS.build(t) for t in stock])
    shifted = preprocessor(
        dict(inputs=[stock(dict(img_path=path))['inputs']]),
        False)['inputs'][0]
    # Whether pycls's and mmcv's crops start at different rows or columns.
    margin = max(shape) * 256 // min(shape) - 224
    differ = math.ceil(margin / 2) != round(margin / 2)
    assert torch.allclose(shifted, theirs, atol=1e-5, rtol=0) != differ
