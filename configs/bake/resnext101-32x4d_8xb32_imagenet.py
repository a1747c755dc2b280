# BAKE on mmpretrain's ResNeXt-101 (32x4d) recipe.
# Only the head (LinearClsHead -> BAKEHead) and the batch sampler change;
# mmbake's hooks check labels and save checkpoints that survive a kill.
#
# Data pipeline, batch size, schedule and loss are inherited from the stock
# config, so a run of this file against `resnext101-32x4d_8xb32_in1k` is a
# same-iterations, same-images comparison. The authors' numbers for this
# architecture come from their own 100-epoch recipe (README.md).
_base_ = [
    'mmpretrain::resnext/resnext101-32x4d_8xb32_in1k.py',
    # custom_imports, bake_head and bake_batch_sampler
    '../_base_/bake.py',
]

model = dict(head=_base_.bake_head)  # LinearClsHead -> BAKEHead
train_dataloader = dict(batch_sampler=_base_.bake_batch_sampler)
# The stock runtime's interval and the rest are kept.
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
