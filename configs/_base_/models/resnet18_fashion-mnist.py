# A narrow ResNet-18 for 1-channel 28x28 input. ResNet_CIFAR keeps full
# resolution in the stem (3x3 conv, stride 1, no max-pool), which suits
# small images; stem and base width 16 (instead of 64) make it about 16x
# cheaper, so that it trains on two CPU cores in minutes. Stage widths:
# 16, 32, 64, 128; the pooled feature has 128 channels.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResNet_CIFAR',
        depth=18,
        in_channels=1,
        stem_channels=16,
        base_channels=16,
        num_stages=4,
        out_indices=(3, ),
        style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
    ))
