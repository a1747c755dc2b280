"""ToGrayscale: BT.601 luma from BGR, gray images untouched, via the
registry."""
import numpy as np
import pytest
from mmengine.registry import DefaultScope


def build():
    from mmpretrain.registry import TRANSFORMS

    import mmbake  # noqa: F401  (registers the transform)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return TRANSFORMS.build(dict(type='ToGrayscale'))


def test_bt601_weights_in_bgr_order():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    gray = build()(dict(img=bgr.copy()))['img']
    assert gray.shape == (32, 48) and gray.dtype == np.uint8
    b, g, r = (bgr[..., c].astype(np.float64) for c in range(3))
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    # OpenCV's 14-bit fixed point, rounded: within half a level (and a
    # hair) of the exact formula.
    assert np.abs(gray - luma).max() <= 0.51
    # Pure blue is darker than pure red: the weights are not applied to
    # the channels in RGB order.
    primaries = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)
    assert build()(dict(img=primaries))['img'].tolist() == [[29, 76]]


def test_three_equal_channels_keep_every_value():
    """A gray image saved as RGB comes back exactly."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    gray = build()(dict(img=np.stack([levels] * 3, -1)))['img']
    assert np.array_equal(gray, levels)


@pytest.mark.parametrize('shape', [(28, 28), (28, 28, 1)])
def test_gray_image_is_returned_as_it_is(shape):
    image = np.random.default_rng(1).integers(0, 256, shape, np.uint8)
    results = build()(dict(img=image))
    assert results['img'] is image


@pytest.mark.parametrize('dtype', [np.uint16, np.float32])
def test_other_dtypes(dtype):
    image = np.full((4, 5, 3), 100, dtype)
    gray = build()(dict(img=image))['img']
    assert gray.dtype == dtype and gray.shape == (4, 5)
    assert np.allclose(gray, 100)


@pytest.mark.parametrize('shape', [(4, 5, 4), (4, 5, 2), (4, 5, 3, 1), (4, )])
def test_other_shapes_are_refused(shape):
    with pytest.raises(
            ValueError,
            match=r'expected an H x W, H x W x 1 or H x W x 3 \(BGR\) '
            rf'image, got shape \({shape[0]},'):
        build()(dict(img=np.zeros(shape, np.uint8)))


def test_repr():
    assert repr(build()) == 'ToGrayscale()'
