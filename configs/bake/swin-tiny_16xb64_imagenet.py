# BAKE on mmpretrain's Swin-T recipe.
# Only the head (LinearClsHead -> BAKEHead) and the batch sampler change;
# mmbake's hooks check labels and save checkpoints that survive a kill.
#
# The stock recipe (16 GPUs x 64 images, AdamW, 300 epochs, RandAugment,
# random erasing, Mixup alpha 0.8 or CutMix alpha 1.0 per batch, label
# smoothing 0.1) is kept on purpose: it is the recipe Swin-T results are
# reported with, and dropping its regularisation would change the baseline
# rather than add BAKE to it. Both stay compatible with BAKE:
# - label smoothing changes only the cross-entropy target; BAKEHead sends
#   its cross-entropy through the configured loss module, which takes the
#   soft gt_score that mixing produces;
# - Mixup/CutMix blend every image with a random partner of the same GPU
#   batch. An anchor and its mate then share their class only in
#   proportion lam (uniform-ish here), so the class-aware layout is
#   diluted in most batches, not removed: the partners are a permutation
#   of the same batch, so every class pair is still present in it.
# README.md, "Mixing and label smoothing", has the details and the switch
# to turn mixing off.
_base_ = [
    'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
    # custom_imports, bake_head and bake_batch_sampler
    '../_base_/bake.py',
]

model = dict(head=_base_.bake_head)  # LinearClsHead -> BAKEHead
train_dataloader = dict(batch_sampler=_base_.bake_batch_sampler)
# The stock runtime's interval and the rest are kept.
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
