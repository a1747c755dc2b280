"""One-channel images from colour ones, for models trained on gray data."""
from typing import Dict

import mmcv
from mmcv.transforms import BaseTransform
from mmpretrain.registry import TRANSFORMS


@TRANSFORMS.register_module()
class ToGrayscale(BaseTransform):
    """Turn a 3-channel BGR image into one channel; leave gray ones alone.

    mmpretrain's ``ImageClassificationInferencer`` (and so
    ``inference_model``; mmpretrain 1.2) drops ``LoadImageFromFile`` from a
    config's test pipeline and decodes every file to 3-channel BGR itself,
    whatever the file holds. Placed in the test pipeline of a one-channel
    model, this transform gives it the H x W array that a gray dataset
    (mmpretrain's ``FashionMNIST``, ``MNIST``) yields, so that an image file
    is classified like the dataset's own image. Colour is converted with the
    ITU-R BT.601 luma weights, as OpenCV's ``cvtColor(COLOR_BGR2GRAY)``
    computes them::

        Y = 0.299 R + 0.587 G + 0.114 B

    in 14-bit fixed point, rounded to the nearest level for uint8 images.
    The three weights add up to exactly one there, so a gray image stored
    as RGB (three equal channels) comes back with its own values.

    **Required Keys:**

    - img

    **Modified Keys:**

    - img
    """

    def transform(self, results: Dict) -> Dict:
        """Convert ``results['img']`` to one channel if it has three.

        Args:
            results (dict): Result dict with ``img``: H x W or H x W x 1
                (returned as it is) or H x W x 3 in BGR order (uint8,
                uint16 or float32).

        Returns:
            dict: ``results`` with ``img`` of one channel; a converted image
            is H x W.

        Raises:
            ValueError: If ``img`` has another shape (an alpha channel, for
                instance: decode files with ``mmcv.imread``, which drops
                it).
        """
        img = results['img']
        if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
            return results
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError('ToGrayscale: expected an H x W, H x W x 1 or '
                             f'H x W x 3 (BGR) image, got shape {img.shape}')
        results['img'] = mmcv.bgr2gray(img)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}()'
