# The studies' base validated on the held-out training images 50,000-54,999:
# the config with which a study's calibrate.py fits each run's temperature.
_base_ = [
    './resnet18_1xb128-multistep_fashion-mnist.py',
    '../../configs/_base_/datasets/fashion_mnist_heldout.py',
]

val_dataloader = dict(dataset=_base_.heldout_dataset)
