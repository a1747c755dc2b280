# The Fashion-MNIST twins validated on the held-out training images
# 50,000-54,999: the config that fits the temperature of their checkpoints
# before release (a BAKE head has the plain head's weights, so it serves
# both twins),
#
#   python tools/analysis_tools/calibrate.py \
#       configs/fashion_mnist/resnet18_1xb64-heldout_fashion-mnist.py \
#       CHECKPOINT --out OUT
_base_ = [
    './resnet18_1xb64-vanilla_fashion-mnist.py',
    '../_base_/datasets/fashion_mnist_heldout.py',
]

val_dataloader = dict(dataset=_base_.heldout_dataset)
