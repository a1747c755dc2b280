"""The zoo's Fashion-MNIST model classifies image files through mmpretrain.

``inference_model`` and ``ImageClassificationInferencer`` decode a file to
BGR (``mmcv.imread``) and run the test pipeline without its loading step.
Real test images as gray, RGB and colour PNG and gray and colour JPEG files
get the class and scores the test pipeline gives the dataset's arrays (for
a JPEG or colour file: PIL's pixels, colour turned gray by ITU-R BT.601).
The authors' ResNet-50: ``tests/test_tools/test_pycls_to_mmpretrain.py``.
"""
import os.path as osp
from typing import Dict, List

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope
from PIL import Image

NAME = 'bake_resnet18_1xb64_fashion-mnist'
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PLAIN_CONFIG = osp.join(REPO, 'configs', 'fashion_mnist',
                        'resnet18_1xb64-vanilla_fashion-mnist.py')
# Official test images: ankle boot, pullover, trouser, shirt.
INDICES = (0, 1, 2, 4)
# Same network, same input, batch of one on both sides: the scores agree to
# float rounding.
SCORE_ATOL = 1e-6
KINDS = ('gray.png', 'rgb.png', 'colour.png', 'gray.jpg', 'colour.jpg')


def build_pipeline(pipeline_cfg: List[dict]):
    """A test pipeline from its config, as the dataset builds it."""
    from mmcv.transforms import Compose
    from mmpretrain.registry import TRANSFORMS

    import mmbake  # noqa: F401  (registers ToGrayscale)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return Compose([TRANSFORMS.build(t) for t in pipeline_cfg])


def bt601_gray(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB uint8 to gray, as OpenCV rounds the BT.601 luma."""
    import cv2
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    # The formula ToGrayscale documents, to OpenCV's fixed-point rounding.
    assert np.abs(gray - luma).max() <= 0.51
    return gray


def tinted(gray: np.ndarray) -> np.ndarray:
    """A colour (H x W x 3 RGB) version of a gray image."""
    gray = gray.astype(np.float32)
    return np.stack([gray, gray * 0.7, 255 - gray * 0.5],
                    axis=-1).round().astype(np.uint8)


@pytest.fixture(scope='module')
def arrays(fashion_mnist_small_root) -> List[np.ndarray]:
    """The dataset's own 28 x 28 uint8 arrays of the images of INDICES."""
    from mmpretrain.datasets import FashionMNIST

    dataset = FashionMNIST(
        fashion_mnist_small_root, split='test', test_mode=True, pipeline=[])
    return [dataset.get_data_info(i)['img'] for i in INDICES]


@pytest.fixture(scope='module')
def files(arrays, tmp_path_factory) -> Dict[str, List[str]]:
    """The images as files, one list per kind, in the order of INDICES."""
    folder = tmp_path_factory.mktemp('fashion_mnist_files')
    kinds = {
        'gray.png': lambda a: Image.fromarray(a, 'L'),
        'rgb.png': lambda a: Image.fromarray(np.stack([a] * 3, -1), 'RGB'),
        'colour.png': lambda a: Image.fromarray(tinted(a), 'RGB'),
        'gray.jpg': lambda a: Image.fromarray(a, 'L'),
        'colour.jpg': lambda a: Image.fromarray(tinted(a), 'RGB'),
    }
    files = {}
    for kind, to_image in kinds.items():
        files[kind] = []
        for index, array in zip(INDICES, arrays):
            path = str(folder / f'{index}_{kind}')
            to_image(array).save(
                path, **(dict(quality=90) if kind.endswith('.jpg') else {}))
            files[kind].append(path)
    # What each file holds, read back by PIL: one or three channels.
    modes = [Image.open(files[kind][0]).mode for kind in kinds]
    assert modes == ['L', 'RGB', 'RGB', 'L', 'RGB']
    return files


def dataset_arrays(kind: str, paths: List[str],
                   arrays: List[np.ndarray]) -> List[np.ndarray]:
    """The gray arrays the dataset would hold for the images of files."""
    if kind.endswith('.png') and kind != 'colour.png':
        # Lossless and gray: the dataset's arrays themselves.
        return arrays
    decoded = [np.asarray(Image.open(p)) for p in paths]
    if kind.startswith('colour'):
        return [bt601_gray(rgb) for rgb in decoded]
    return decoded


@pytest.fixture(scope='module')
def zoo():
    """The zoo entry's model (published weights), its test pipeline and an
    inferencer."""
    import mmpretrain
    from mmpretrain.apis import ModelHub

    import mmbake  # noqa: F401  (registers the zoo)
    pipeline = ModelHub.get(NAME).config.test_dataloader.dataset.pipeline
    return dict(
        model=mmpretrain.get_model(NAME, pretrained=True).eval(),
        pipeline=build_pipeline(pipeline),
        inferencer=mmpretrain.ImageClassificationInferencer(
            NAME, pretrained=True, device='cpu'))


@torch.no_grad()
def reference_scores(zoo, array: np.ndarray) -> torch.Tensor:
    """Scores of the test pipeline on a dataset-style array, one image."""
    packed = zoo['pipeline'](dict(img=array))
    (sample, ) = zoo['model'].test_step(
        dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']]))
    return sample.pred_score


def assert_same_result(result: dict, expected: torch.Tensor) -> None:
    """An inferencer result has the class and scores of ``expected``."""
    assert result['pred_label'] == int(expected.argmax())
    assert result['pred_score'] == pytest.approx(
        float(expected.max()), abs=SCORE_ATOL)
    np.testing.assert_allclose(
        result['pred_scores'], expected.numpy(), rtol=0, atol=SCORE_ATOL)


def test_dataset_arrays_pass_the_test_pipeline_unchanged(zoo, arrays):
    """The dataset path: same network input as the plain twin's
    ``PackInputs``-only pipeline, hence the same test numbers."""
    from mmengine.config import Config

    plain = build_pipeline(
        Config.fromfile(PLAIN_CONFIG).test_dataloader.dataset.pipeline)
    for array in arrays:
        ours = zoo['pipeline'](dict(img=array.copy()))['inputs']
        assert ours.shape == (1, 28, 28)
        assert torch.equal(ours, plain(dict(img=array.copy()))['inputs'])


def test_published_model_on_these_images(zoo, arrays):
    """The comparisons below are between real, distinct predictions; the
    shirt is taken for a coat (score 0.53, shirt 0.41), an uncertain case in
    which a changed network input would show in the scores."""
    scores = [reference_scores(zoo, a) for a in arrays]
    assert [int(s.argmax()) for s in scores] == [9, 2, 1, 4]
    assert float(scores[3].max()) < 0.6


@pytest.mark.parametrize('kind', KINDS)
def test_inferencer_on_files(kind, zoo, files, arrays):
    paths = files[kind]
    results = zoo['inferencer'](paths)
    assert len(results) == len(paths)
    expected = dataset_arrays(kind, paths, arrays)
    for path, result, array in zip(paths, results, expected):
        assert_same_result(result, reference_scores(zoo, array))
        if kind in ('gray.png', 'rgb.png'):
            # Lossless gray files: the dataset's network input exactly.
            (batch, ) = zoo['inferencer'].preprocess([path])
            assert torch.equal(batch['inputs'][0],
                               zoo['pipeline'](dict(img=array))['inputs'])


@pytest.mark.parametrize('kind', ['gray.png', 'rgb.png', 'colour.jpg'])
def test_inference_model_on_a_file(kind, zoo, files, arrays):
    """The issue's call: ``inference_model(name, path, pretrained=True)``."""
    import mmpretrain
    path = files[kind][2]  # the trouser
    result = mmpretrain.inference_model(NAME, path, pretrained=True)
    (array, ) = dataset_arrays(kind, [path], [arrays[2]])
    assert result['pred_class'] == 'Trouser'
    assert_same_result(result, reference_scores(zoo, array))


@pytest.mark.parametrize('layout', ['hw', 'hw1', 'hw3'])
def test_inferencer_on_arrays(layout, zoo, arrays):
    """Arrays as mmpretrain takes them: gray, or 3-channel BGR."""
    array = arrays[1]
    given = dict(
        hw=array, hw1=array[..., None], hw3=np.stack([array] * 3, -1))[layout]
    (result, ) = zoo['inferencer']([given])
    assert_same_result(result, reference_scores(zoo, array))
