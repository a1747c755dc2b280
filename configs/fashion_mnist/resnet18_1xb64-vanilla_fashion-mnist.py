# Plain cross-entropy baseline: narrow ResNet-18 on Fashion-MNIST, 1 process
# x batch 64, trained on the first 10,000 training images (a regime where
# regularisers such as BAKE can pay off) and tested on the official 10,000
# test images. The BAKE twin is configs/bake/resnet18_1xb64_fashion-mnist.py.
_base_ = [
    '../_base_/models/resnet18_fashion-mnist.py',
    '../_base_/datasets/fashion_mnist.py',
    '../_base_/schedules/fashion-mnist_bs64.py',
    '../_base_/default_runtime.py',
]

# The twins' work dirs are grouped by family, as the configs are.
work_dir = './work_dirs/fashion_mnist/resnet18_1xb64-vanilla_fashion-mnist'

# The first 10,000 of the 60,000 training images (classes stay balanced).
train_dataloader = dict(dataset=dict(indices=10000))
