# The authors' ImageNet test-time preprocessing (yxgeee/BAKE, imagenet/
# pycls/datasets/imagenet.py), step for step, for the configs of models
# converted from their pycls checkpoints. A config lists this file after
# its recipe and applies it to evaluation:
#
#   val_dataloader = dict(dataset=dict(pipeline=_base_.pycls_test_pipeline))
#   test_dataloader = dict(dataset=dict(pipeline=_base_.pycls_test_pipeline))
#
# PyclsCenterCrop is registered by mmbake: the config must load it with
# `custom_imports` (set here, it would clash with the recipe's own).
# tests/test_configs/test_authors_pycls_configs.py checks that it gives
# the same network input as the authors' loader, to float rounding.

pycls_test_pipeline = [
    # The authors decode with PIL (Image.open(path).convert('RGB')), which
    # ignores EXIF orientation, and work in float32 from the start.
    dict(
        type='LoadImageFromFile',
        imdecode_backend='pillow',
        color_type='color_ignore_orientation'),
    # float32 as a step of its own (mmpretrain's ToNumpy casts arrays too),
    # not the loader's to_float32: mmpretrain's inference_model and
    # ImageClassificationInferencer replace the loader with their own uint8
    # OpenCV decoding and keep this step, so that a file gets the same
    # network input through them as here (a uint8 resize would round it).
    # (OpenCV, unlike PIL, applies EXIF orientation: there a photo with an
    # orientation tag is turned upright first.)
    dict(type='ToNumpy', dtype='float32'),
    # Short side to 256 (long side rounded down, as pycls does), bilinear
    # with OpenCV on the float image; an image whose short side is already
    # 256 comes back unchanged, as in pycls.
    dict(
        type='ResizeEdge',
        scale=256,
        edge='short',
        backend='cv2',
        interpolation='bilinear'),
    # 224 x 224 from the centre, half-pixel offsets rounded up as in pycls.
    dict(type='PyclsCenterCrop', crop_size=224),
    # Scaling and normalisation are the data preprocessor's: mmpretrain's
    # ImageNet statistics in RGB order are the authors' BGR ones (x 255),
    # reversed, to match the converted stem (see
    # tools/model_converters/pycls_to_mmpretrain.py).
    dict(type='PackInputs'),
]
