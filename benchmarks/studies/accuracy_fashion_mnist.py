"""BAKE, cross-entropy and label smoothing at the same images and the same
iterations: the Fashion-MNIST twins on 9,984 images for 20 epochs.

Run on 2026-11-26 by the script of that time (commit 0129561); its
results file was converted to the format of benchmarks/study.py without
retraining.
"""
VANILLA = 'configs/fashion_mnist/resnet18_1xb64-vanilla_fashion-mnist.py'
EPOCHS = 20
# param_scheduler.1.end: the cosine phase ends where training does.
OPTIONS = [
    f'train_cfg.max_epochs={EPOCHS}', f'train_cfg.val_interval={EPOCHS}',
    f'param_scheduler.1.end={EPOCHS}', 'train_dataloader.dataset.indices=9984',
    'train_dataloader.batch_size=64',
    f'default_hooks.checkpoint.interval={EPOCHS}'
] + [
    f'{loader}_dataloader.{key}' for loader in ('train', 'val', 'test')
    for key in ('num_workers=0', 'persistent_workers=False')
]
LS = [
    'model.head.loss.type=LabelSmoothLoss',
    'model.head.loss.label_smooth_val=0.1'
]
ARMS = dict(
    vanilla=dict(config=VANILLA, options=[]),
    label_smoothing=dict(config=VANILLA, options=LS),
    bake=dict(
        config='configs/bake/resnet18_1xb64_fashion-mnist.py', options=[]))
RUN = dict(group=None, epochs=EPOCHS, iterations=3120, options=OPTIONS)

STUDY = dict(
    name='accuracy_fashion_mnist',
    question='Does BAKE (paper defaults, one same-class mate per anchor) '
    'beat cross-entropy and label smoothing at the same images and the '
    'same iterations (3,120 of 64 images)?',
    data='the first 9,984 Fashion-MNIST training images; the official '
    '10,000 test images, once, after the final epoch',
    tuning='none: paper defaults, label smoothing 0.1; subset and epochs '
    'fixed in advance by the time budget',
    ran_with='benchmarks/accuracy.py of commit 0129561 (2026-11-26)',
    arms=ARMS,
    runs=[
        dict(arm=arm, seed=seed, **RUN) for seed in range(5) for arm in ARMS
    ],
    compare=[['bake', 'vanilla'], ['bake', 'label_smoothing'],
             ['label_smoothing', 'vanilla']],
)
