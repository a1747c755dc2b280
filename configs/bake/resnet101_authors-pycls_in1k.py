# A BAKE ResNet-101 trained with the authors' code (yxgeee/BAKE,
# imagenet/configs/resnet/BAKE-R-101-1x64d_dds_8gpu.yaml),
# converted with tools/model_converters/pycls_to_mmpretrain.py. The authors
# released no weights for this network; the converter prints this config for
# such a checkpoint, and tools/test.py evaluates it with their test-time
# pipeline. Their recipe is that of ResNet-50 with another network, so this
# file is the ResNet-50 one with the backbone swapped.
_base_ = ['./resnet50_authors-pycls_in1k.py']

model = dict(backbone=dict(depth=101))
