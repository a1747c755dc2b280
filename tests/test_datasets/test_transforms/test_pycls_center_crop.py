"""PyclsCenterCrop: pycls's crop offsets, through mmpretrain's registry."""
import numpy as np
import pytest
from mmengine.registry import DefaultScope


def build(**kwargs):
    from mmpretrain.registry import TRANSFORMS

    import mmbake  # noqa: F401  (registers the transform)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return TRANSFORMS.build(dict(type='PyclsCenterCrop', **kwargs))


@pytest.mark.parametrize('shape', [(224, 224), (256, 353), (353, 256),
                                   (256, 354), (300, 301), (225, 227)])
def test_same_crop_as_pycls(shape):
    from pycls.datasets.transforms import center_crop

    image = np.arange(
        shape[0] * shape[1] * 3, dtype=np.float32).reshape(*shape, 3)
    results = build(crop_size=224)(dict(img=image.copy()))
    assert np.array_equal(results['img'], center_crop(224, image))
    assert results['img_shape'] == (224, 224)


def test_odd_margin_rounds_up():
    # 129 columns to spare: pycls starts at column 65 (mmcv's CenterCrop,
    # rounding half to even, at 64).
    image = np.tile(np.arange(353, dtype=np.int32), (256, 1))
    crop = build(crop_size=224)(dict(img=image))['img']
    assert crop.shape == (224, 224)
    assert crop[0, 0] == 65 and crop[0, -1] == 65 + 223


def test_grayscale_image():
    image = np.zeros((240, 250), np.uint8)
    assert build(crop_size=224)(dict(img=image))['img'].shape == (224, 224)


@pytest.mark.parametrize('crop_size', [0, -1, 224.0, True, '224'])
def test_bad_crop_size(crop_size):
    with pytest.raises(ValueError, match='crop_size must be a positive int'):
        build(crop_size=crop_size)


def test_image_smaller_than_the_crop():
    with pytest.raises(
            ValueError,
            match=r'200x300 \(HxW\), smaller than '
            r'the 224x224 crop'):
        build(crop_size=224)(dict(img=np.zeros((200, 300, 3), np.uint8)))


def test_repr():
    assert repr(build(crop_size=224)) == 'PyclsCenterCrop(crop_size=224)'
