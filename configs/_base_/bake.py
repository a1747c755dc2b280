# What BAKE changes in a stock mmpretrain ImageNet recipe, shared by the
# configs in configs/bake/ that inherit one. A config lists this file after
# its stock recipe and applies the two pieces:
#
#   _base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py', '../_base_/bake.py']
#   model = dict(head=_base_.bake_head)
#   train_dataloader = dict(batch_sampler=_base_.bake_batch_sampler)
#   default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
#
# (mmengine refuses a key defined in two bases, so `model`,
# `train_dataloader` and `default_hooks` themselves cannot live here.)
# SafeCheckpointHook: mmengine's CheckpointHook (same settings) that a kill
# while saving leaves with a checkpoint to resume from.

# Register BAKEHead and ClassAwareBatchSampler into mmpretrain's registries.
custom_imports = dict(imports=['mmbake'], allow_failed_imports=False)

# Before training or testing: a head without a class for a label of the
# data fails at once, naming both, not in the first step with "IndexError:
# Target 7 is out of bounds" (nor after the first epoch, in validation).
custom_hooks = [dict(type='CheckLabelsHook')]

# Merged into the inherited LinearClsHead: same layers and state_dict keys;
# num_classes, in_channels, the loss, topk and cal_acc are kept by the
# merge. The paper's defaults, spelled out so that the config documents
# them; the ensemble runs over the batches of all GPUs, as the authors did.
bake_head = dict(
    type='BAKEHead',
    omega=0.5,
    temperature=4.0,
    bake_weight=1.0,
    global_ensemble=True)

# Each anchor from the inherited sampler brings one same-class mate (M = 1).
# epoch_mode='images' keeps the stock images per GPU per iteration and the
# stock number of iterations per epoch.
bake_batch_sampler = dict(
    type='ClassAwareBatchSampler', num_instances=2, epoch_mode='images')
