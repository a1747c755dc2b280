# BAKE with the authors' small-scale recipe: CIFAR-100, ResNet-18
# (yxgeee/BAKE, small_scale/: `train_bake.sh 0 cifar100 CIFAR_ResNet18 128 3
# 0.5`, built on the CS-KD code).
#
# One GPU, 128 images per iteration = 32 anchors + 3 same-class mates each
# (M = 3), an epoch is one pass over the anchors (1,563 iterations, four
# times the images of a plain epoch), SGD lr 0.1, momentum 0.9, weight decay
# 1e-4, 200 epochs, lr / 10 at epochs 100 and 150, omega 0.5, T 4, lambda 1.
# mmpretrain's ResNet_CIFAR-18 (3x3 stem, no max-pool) is the same network
# as the authors' CIFAR_ResNet18. The authors report the best test accuracy
# over all epochs; the validation loop here evaluates the test split every
# epoch, so that number can be read from the log (README.md).
_base_ = [
    'mmpretrain::_base_/models/resnet18_cifar.py',
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    # SGD lr 0.1, momentum 0.9, wd 1e-4, steps at 100/150, 200 epochs.
    'mmpretrain::_base_/schedules/cifar10_bs128.py',
    'mmpretrain::_base_/default_runtime.py',
]

# Register BAKEHead and ClassAwareBatchSampler into mmpretrain's registries.
custom_imports = dict(imports=['mmbake'], allow_failed_imports=False)

model = dict(
    head=dict(
        type='BAKEHead',
        num_classes=100,
        omega=0.5,
        temperature=4.0,
        bake_weight=1.0,
        # A single GPU: nothing to gather.
        global_ensemble=False))

train_dataloader = dict(
    batch_size=128,
    batch_sampler=dict(
        type='ClassAwareBatchSampler', num_instances=4, epoch_mode='anchors'))
val_dataloader = dict(batch_size=128)
# mmbake's hooks (configs/_base_/bake.py): checkpoints that survive a kill,
# labels checked against the head before training or testing.
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
custom_hooks = [dict(type='CheckLabelsHook')]
test_dataloader = dict(batch_size=128)
