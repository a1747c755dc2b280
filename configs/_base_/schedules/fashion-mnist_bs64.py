# SGD with a one-epoch linear warm-up, then cosine decay to zero, for a
# total batch size of 64. Validation runs once, after the last epoch, to save
# time (mmengine's loop always validates after the last epoch).
max_epochs = 15

optim_wrapper = dict(
    optimizer=dict(
        type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True))

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.1,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        by_epoch=True,
        begin=1,
        end=max_epochs,
        eta_min=0.0,
        convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()

# `--auto-scale-lr` scales the learning rate by (total batch size / 64).
auto_scale_lr = dict(base_batch_size=64)
