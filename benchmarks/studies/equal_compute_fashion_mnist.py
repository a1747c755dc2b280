"""Does BAKE's gain survive equal compute? The authors' accounting beside
same-iteration baselines, 1,024 Fashion-MNIST images, E = 60.

Declared on 2026-11-29 before any run, run at commit 9bca59d by the script
of that time; its results file was converted to the format of
benchmarks/study.py without retraining.
"""
CONFIG = 'benchmarks/configs/resnet18_1xb128-multistep_fashion-mnist.py'
E, PLAIN, AUTHORS = 60, 8, 32  # iterations per epoch of 1,024 images
LS = [
    'model.head.loss.type=LabelSmoothLoss',
    'model.head.loss.label_smooth_val=0.1'
]
BAKE = [
    'model.head.type=BAKEHead', 'model.head.omega=0.5',
    'model.head.temperature=4.0', 'model.head.bake_weight=1.0',
    'train_dataloader.batch_sampler.type=ClassAwareBatchSampler',
    'train_dataloader.batch_sampler.num_instances=4',
    'train_dataloader.batch_sampler.epoch_mode=anchors'
]
# arm: (options, epochs, iterations per epoch)
ARMS = {
    'ce_same_epochs': ([], E, PLAIN),
    'ce_same_iterations': ([], 4 * E, PLAIN),
    'ls_same_iterations': (LS, 4 * E, PLAIN),
    'bake_authors': (BAKE, E, AUTHORS),
}


def run(arm: str, seed: int) -> dict:
    _, epochs, per_epoch = ARMS[arm]
    iterations = epochs * per_epoch
    options = [
        'train_dataloader.dataset.indices=1024',
        f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
        f'default_hooks.checkpoint.interval={epochs}',
        f'param_scheduler.0.milestones=[{iterations // 2},'
        f'{iterations * 3 // 4}]'
    ]
    spec = dict(arm=arm, seed=seed, group=None, epochs=epochs)
    spec.update(iterations=iterations, options=options)
    return spec


STUDY = dict(
    name='equal_compute_fashion_mnist',
    question='BAKE with the authors\' epoch accounting (4x the iterations '
    'of a same-epoch baseline) against cross-entropy and label smoothing '
    'given the same iterations: is the gain the method or the compute?',
    data='the first 1,024 Fashion-MNIST training images; the official '
    '10,000 test images, once, after the final epoch',
    tuning='none: the authors\' small-scale hyper-parameters; declared '
    'before any run (E = 60, 3 seeds: the CPU setting of the rule "E = 200 '
    'and 5 seeds on a GPU")',
    ran_with='benchmarks/equal_compute.py of commit 9bca59d (2026-11-29)',
    arms={
        arm: dict(config=CONFIG, options=opts)
        for arm, (opts, _, _) in ARMS.items()
    },
    runs=[run(arm, seed) for seed in (0, 1, 2) for arm in ARMS],
    compare=[['bake_authors', 'ce_same_epochs'],
             ['bake_authors', 'ce_same_iterations'],
             ['bake_authors', 'ls_same_iterations'],
             ['ls_same_iterations', 'ce_same_iterations']],
)
