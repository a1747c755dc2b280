# BAKE on mmpretrain's ResNeSt-50 recipe.
# Only the head (LinearClsHead -> BAKEHead) and the batch sampler change;
# mmbake's hooks check labels and save checkpoints that survive a kill.
#
# The stock recipe (32 GPUs x 64 images, 270 epochs, RandAugment, Mixup
# alpha 0.2, label smoothing 0.1) is kept on purpose, so that a run of this
# file against `resnest50_32xb64_in1k` measures what BAKE adds to that
# recipe. Both mixing and smoothing stay compatible with BAKE:
# - label smoothing changes only the cross-entropy target; BAKEHead sends
#   its cross-entropy through the configured loss module;
# - Mixup blends every image with a random partner of the same GPU batch
#   (one ratio per batch). An anchor and its mate still share their own
#   class in proportion lam, and Beta(0.2, 0.2) puts lam below 0.1 or above
#   0.9 in about two batches out of three, where the class-aware layout
#   survives almost intact (the partners are a permutation of the same
#   batch, so every anchor/mate pair is still in it). README.md,
#   "Mixing and label smoothing", has the details and the switch to turn
#   Mixup off.
# The authors' number for this architecture comes from their own 100-epoch
# recipe without Mixup or label smoothing (README.md).
_base_ = [
    'mmpretrain::resnest/resnest50_32xb64_in1k.py',
    # custom_imports, bake_head and bake_batch_sampler
    '../_base_/bake.py',
]

model = dict(head=_base_.bake_head)  # LinearClsHead -> BAKEHead
train_dataloader = dict(batch_sampler=_base_.bake_batch_sampler)
# The stock runtime's interval and the rest are kept.
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
