# The studies' base (benchmarks/studies/): the narrow ResNet-18 of the
# Fashion-MNIST twins with the authors' small-scale schedule
# (github.com/yxgeee/BAKE, small_scale/): batch 128, SGD lr 0.1, momentum
# 0.9, weight decay 1e-4, no warm-up, lr x0.1 at 50 % and 75 % of the
# iterations. A study sets per run, as --cfg-options, the training images,
# the epochs, the milestones and the arm's head and batch sampler; this file
# is plain cross-entropy with mmengine's default sampler.
_base_ = [
    '../../configs/fashion_mnist/resnet18_1xb64-vanilla_fashion-mnist.py'
]

# Data loading in the training process: a study runs several at a time.
train_dataloader = dict(
    batch_size=128, num_workers=0, persistent_workers=False)
val_dataloader = dict(num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='SGD',
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        nesterov=False))
param_scheduler = [
    dict(type='MultiStepLR', by_epoch=False, milestones=[512, 768], gamma=0.1)
]
# Validation (and the one checkpoint kept) after the final epoch only.
train_cfg = dict(by_epoch=True, max_epochs=8, val_interval=8)
default_hooks = dict(checkpoint=dict(interval=8, max_keep_ckpts=1))

val_evaluator = [
    dict(type='Accuracy', topk=(1, )),
    dict(type='Calibration', num_bins=15),
]
test_evaluator = val_evaluator
auto_scale_lr = dict(base_batch_size=128)
