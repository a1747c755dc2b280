# Fashion-MNIST (28x28 grayscale, 10 classes), read by mmpretrain's stock
# FashionMNIST class from the uncompressed IDX files in `data_root`. Build the
# folder with tools/dataset_converters/prepare_fashion_mnist.py.
dataset_type = 'FashionMNIST'
data_root = 'data/fashion_mnist'

data_preprocessor = dict(
    num_classes=10,
    # Pixel mean and std of the 60,000 training images (0.2860 * 255 and
    # 0.3530 * 255): one channel, so no RGB conversion.
    mean=[72.94],
    std=[90.02],
    to_rgb=False)

train_pipeline = [
    dict(type='RandomCrop', crop_size=28, padding=2),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=64,
    num_workers=1,
    # Set explicitly: mmpretrain's stock tools/train.py defaults both to True,
    # and persistent workers need num_workers > 0.
    persistent_workers=True,
    pin_memory=False,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        download=False,
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)

val_dataloader = dict(
    batch_size=256,
    num_workers=1,
    persistent_workers=True,
    pin_memory=False,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        # mmpretrain 1.2.0's (Fashion)MNIST picks the files by `test_mode`,
        # not by `split`: without test_mode=True, split='test' silently
        # loads the 60,000 training images.
        split='test',
        test_mode=True,
        download=False,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
