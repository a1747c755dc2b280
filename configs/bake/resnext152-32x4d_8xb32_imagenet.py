# BAKE on mmpretrain's ResNeXt-152 (32x4d) recipe: only BAKE's needs change.
#
# Data pipeline, batch size, schedule and loss are inherited from the stock
# config, so a run of this file against `resnext152-32x4d_8xb32_in1k` is a
# same-iterations, same-images comparison. The authors' numbers for this
# architecture come from their own 100-epoch recipe (README.md).
_base_ = 'mmpretrain::resnext/resnext152-32x4d_8xb32_in1k.py'

# Register BAKEHead and ClassAwareBatchSampler into mmpretrain's registries.
custom_imports = dict(imports=['mmbake'], allow_failed_imports=False)

model = dict(
    head=dict(
        # Same layers and state_dict keys as the inherited LinearClsHead;
        # num_classes, in_channels, loss and topk are kept by the merge.
        type='BAKEHead',
        omega=0.5,
        temperature=4.0,
        bake_weight=1.0,
        global_ensemble=True))

train_dataloader = dict(
    # One same-class mate per anchor (M = 1); images per iteration and
    # iterations per epoch stay those of the stock config.
    batch_sampler=dict(
        type='ClassAwareBatchSampler', num_instances=2, epoch_mode='images'))

# The authors trained with SyncBN; the runner converts BN layers only when
# the job is distributed.
sync_bn = 'torch'
