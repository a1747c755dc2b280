"""Centre crop placed the way pycls places it, for the authors' test setup."""
import math
from typing import Dict

from mmcv.transforms import BaseTransform
from mmpretrain.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PyclsCenterCrop(BaseTransform):
    """Crop a square from the centre, offsets rounded up as in pycls.

    pycls (``pycls/datasets/transforms.py``, ``center_crop``), which the
    BAKE authors trained and tested their ImageNet models with, starts the
    crop at ``ceil((h - size) / 2)`` and ``ceil((w - size) / 2)``. mmcv's
    ``CenterCrop`` rounds the same half-pixel offsets to the nearest even
    number instead, so for about one image in four the two crops are one
    pixel apart. With this transform after
    ``ResizeEdge(scale=256, edge='short')`` the authors' test pipeline is
    reproduced exactly (``configs/_base_/pycls_test_pipeline.py``).

    **Required Keys:**

    - img

    **Modified Keys:**

    - img
    - img_shape

    Args:
        crop_size (int): Side of the square crop, in pixels.
    """

    def __init__(self, crop_size: int) -> None:
        if (isinstance(crop_size, bool) or not isinstance(crop_size, int)
                or crop_size < 1):
            raise ValueError('crop_size must be a positive int, got '
                             f'{crop_size!r}')
        self.crop_size = crop_size

    def transform(self, results: Dict) -> Dict:
        """Crop ``results['img']``.

        Args:
            results (dict): Result dict with ``img`` (H x W or H x W x C).

        Returns:
            dict: ``results`` with the cropped ``img`` and its
            ``img_shape``.

        Raises:
            ValueError: If the image is smaller than the crop (pycls
                refuses those too).
        """
        img = results['img']
        height, width = img.shape[:2]
        size = self.crop_size
        if height < size or width < size:
            raise ValueError(
                f'PyclsCenterCrop: the image is {height}x{width} (HxW), '
                f'smaller than the {size}x{size} crop; resize it first')
        top = int(math.ceil((height - size) / 2))
        left = int(math.ceil((width - size) / 2))
        results['img'] = img[top:top + size, left:left + size]
        results['img_shape'] = results['img'].shape[:2]
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(crop_size={self.crop_size})'
