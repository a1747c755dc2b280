# BAKE ResNet-50 with the authors' ImageNet recipe (yxgeee/BAKE,
# imagenet/configs/resnet/BAKE-R-50-1x64d_dds_8gpu.yaml and pycls defaults):
# 8 GPUs x 64 images (32 anchors + 32 mates), an epoch is one pass over the
# anchors (so twice the images of a plain epoch), SGD with Nesterov momentum,
# lr 0.4, 5 warm-up epochs from 0.1x, cosine to 0 over 100 epochs, weight
# decay 5e-5 on every parameter, PCA lighting noise, SyncBN, precise BN
# statistics on 8,192 training images after each epoch.
#
# Known remaining difference (README.md, "What differs"): mmpretrain's
# ResNet-50 instead of pycls's.
_base_ = './resnet50_8xb32_imagenet.py'

# pycls does not zero-initialise the last BN of each residual block
# (BN.ZERO_INIT_FINAL_GAMMA = False); mmpretrain's ResNet does by default.
model = dict(backbone=dict(zero_init_residual=False))

# AlexNet-style PCA lighting noise (pycls applies it to every training
# image); BGR eigenvalues on the 0-255 scale, as in mmpretrain's ResNeSt
# configs.
EIGVAL = [55.4625, 4.7940, 1.1475]
EIGVEC = [
    [-0.5836, -0.6948, 0.4203],
    [-0.5808, -0.0045, -0.8140],
    [-0.5675, 0.7192, 0.4009],
]

train_pipeline = [
    # float32 from the start: mmpretrain's Lighting casts its result back to
    # the input dtype without clipping, so on uint8 images a saturated pixel
    # pushed past 255 would wrap around to a dark one.
    dict(type='LoadImageFromFile', to_float32=True),
    dict(type='RandomResizedCrop', scale=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='Lighting',
        eigval=EIGVAL,
        eigvec=EIGVEC,
        alphastd=0.1,
        to_rgb=False),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=64,
    dataset=dict(pipeline=train_pipeline),
    # The authors' sampler yields every anchor once per epoch plus its mate:
    # 1,281,167 anchors -> about 2.56M images per epoch.
    batch_sampler=dict(epoch_mode='anchors'))

optim_wrapper = dict(
    optimizer=dict(
        type='SGD', lr=0.4, momentum=0.9, weight_decay=5e-5, nesterov=True))

# pycls: lr(e) = 0.4 * 0.5 * (1 + cos(pi * e / 100)) for epoch e, times the
# warm-up factor 0.1 + 0.9 * e / 5 for e < 5; both change once per epoch.
# mmengine chains overlapping schedulers multiplicatively, and its LinearLR
# reaches end_factor at step end - 1, hence end=6 for a 5-epoch warm-up
# (checked: the two schedules agree to 1e-15 relative at every epoch).
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=6),
    dict(
        type='CosineAnnealingLR',
        T_max=100,
        eta_min=0.0,
        by_epoch=True,
        begin=0,
        end=100),
]

train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)

# The authors' learning rate 0.4 belongs to 8 x 64 = 512 images per step.
auto_scale_lr = dict(base_batch_size=512)

# The authors trained with SyncBN; mmengine's runner converts the BN layers
# when the job is distributed (one process keeps plain BN).
sync_bn = 'torch'

# pycls's precise BN (BN.USE_PRECISE_STATS, BN.NUM_SAMPLES_PRECISE = 8192):
# after every epoch, before the checkpoint is saved, the BN statistics are
# recomputed with the weights fixed on 8,192 training images (16 class-aware
# batches of 64 per GPU on 8 GPUs), averaged over the GPUs. mmbake's hook is
# mmpretrain's PreciseBNHook, reading the batch sampler's batch size.
# (This list replaces the one of ../_base_/bake.py: it names CheckLabelsHook
# again.)
custom_hooks = [
    dict(type='CheckLabelsHook'),
    dict(type='BatchSamplerPreciseBNHook', num_samples=8192, interval=1),
]
