# A BAKE ResNeXt-152 (32x4d) trained with the authors' code (yxgeee/BAKE,
# imagenet/configs/resnext/BAKE-X-152-32x4d_dds_8gpu.yaml),
# converted with tools/model_converters/pycls_to_mmpretrain.py. The authors
# released no weights for this network; the converter prints this config for
# such a checkpoint, and tools/test.py evaluates it with their test-time
# pipeline. Their recipe is that of ResNet-50 with another network, so this
# file is the ResNet-50 one with the backbone swapped.
_base_ = ['./resnet50_authors-pycls_in1k.py']

model = dict(
    backbone=dict(type='ResNeXt', depth=152, groups=32, width_per_group=4))
