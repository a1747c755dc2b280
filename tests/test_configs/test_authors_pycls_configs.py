"""The configs for the authors' converted pycls checkpoints.

``configs/bake/*_authors-pycls_in1k.py`` are the authors' recipe
(``resnet50_8xb64-authors_imagenet.py``) with the network swapped and the
authors' test-time pipeline (``configs/_base_/pycls_test_pipeline.py``).
The pipeline is checked against the authors' own steps, run with pycls's
functions (``pycls==0.1.1``, whose ``scale``, ``center_crop`` and
``color_norm`` are those of the authors' fork) on real JPEG files.
"""
import copy
import math
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from tests.script_utils import load_script

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BAKE_DIR = osp.join(REPO, 'configs', 'bake')
RECIPE = 'resnet50_8xb64-authors_imagenet.py'
CONVERTER = 'tools/model_converters/pycls_to_mmpretrain.py'
# Config -> the backbone it sets on top of the authors' ResNet-50 recipe.
BACKBONES = {
    'resnet50_authors-pycls_in1k.py':
    dict(type='ResNet', depth=50),
    'resnet101_authors-pycls_in1k.py':
    dict(type='ResNet', depth=101),
    'resnet152_authors-pycls_in1k.py':
    dict(type='ResNet', depth=152),
    'resnext101-32x4d_authors-pycls_in1k.py':
    dict(type='ResNeXt', depth=101, groups=32, width_per_group=4),
    'resnext152-32x4d_authors-pycls_in1k.py':
    dict(type='ResNeXt', depth=152, groups=32, width_per_group=4),
}
_loaded = {}


def load(name: str) -> Config:
    """Load a config of configs/bake/ once per test session."""
    if name not in _loaded:
        _loaded[name] = Config.fromfile(osp.join(BAKE_DIR, name))
    return copy.deepcopy(_loaded[name])


def test_every_authors_pycls_config_is_covered():
    import glob
    found = sorted(
        osp.basename(p)
        for p in glob.glob(osp.join(BAKE_DIR, '*_authors-pycls_in1k.py')))
    assert found == sorted(BACKBONES)


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_config_is_the_authors_recipe_with_their_test_pipeline(name):
    cfg, recipe = load(name).to_dict(), load(RECIPE).to_dict()
    pipeline = cfg.pop('pycls_test_pipeline')
    for loader in ('val_dataloader', 'test_dataloader'):
        assert cfg[loader]['dataset'].pop('pipeline') == pipeline
        recipe[loader]['dataset'].pop('pipeline')
    assert [t['type'] for t in pipeline] == [
        'LoadImageFromFile', 'ToNumpy', 'ResizeEdge', 'PyclsCenterCrop',
        'PackInputs'
    ]
    backbone = cfg['model'].pop('backbone')
    recipe_backbone = recipe['model'].pop('backbone')
    assert {k: backbone[k] for k in BACKBONES[name]} == BACKBONES[name]
    for key in ('groups', 'width_per_group', 'type', 'depth'):
        backbone.pop(key, None)
        recipe_backbone.pop(key, None)
    assert backbone == recipe_backbone
    for d in (cfg, recipe):
        d.pop('filename', None)
    assert cfg == recipe


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
            from_config = MODELS.build(load(osp.basename(path)).model)
            from_tool = MODELS.build(arch.model_cfg())
        shapes = {k: v.shape for k, v in from_config.state_dict().items()}
        assert shapes == {
            k: v.shape
            for k, v in from_tool.state_dict().items()
        }, path
        del from_config, from_tool


def authors_test_input(path: str) -> np.ndarray:
    """The network input of the authors' ImageNet loader for one image.

    yxgeee/BAKE ``imagenet/pycls/datasets/imagenet.py`` at test time: PIL
    decode, RGB to BGR, float32, ``scale(256)``, ``center_crop(224)``,
    CHW, divide by 255, ``color_norm`` with their BGR statistics.
    """
    from PIL import Image
    from pycls.datasets import imagenet, transforms

    im = Image.open(path).convert('RGB')
    im = cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2BGR)
    im = im.astype(np.float32, copy=False)
    im = transforms.scale(256, im)
    im = transforms.center_crop(224, im)
    im = im.transpose([2, 0, 1]) / 255.0
    return transforms.color_norm(im, imagenet._MEAN, imagenet._SD)


# (height, width): both resize paths (a short side already at 256 is left
# alone by pycls) and both orientations; the first three leave an odd
# margin around the crop where pycls's offset (rounded up) and mmcv's
# (rounded half to even) differ: 353 - 224 = 129, and
# floor(414 * 256 / 300) = 353; the last one an even margin.
SHAPES = [(256, 353), (353, 256), (300, 414), (256, 354)]


def crop_offsets_differ(shape) -> bool:
    """Whether pycls's and mmcv's centre crops start at different rows or
    columns after the short side is resized to 256."""
    short, long = min(shape), max(shape)
    margin = long * 256 // short - 224
    return math.ceil(margin / 2) != round(margin / 2)


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

    cfg = load('resnet50_authors-pycls_in1k.py')
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
    assert torch.allclose(
        shifted, theirs, atol=1e-5, rtol=0) != crop_offsets_differ(shape)
