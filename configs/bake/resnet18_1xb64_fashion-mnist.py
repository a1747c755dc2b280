# BAKE twin of configs/fashion_mnist/resnet18_1xb64-vanilla_fashion-mnist.py:
# the same model, data, schedule and seed; only the head (cross-entropy plus
# the batch-knowledge-ensembling distillation term) and the batch sampler
# (each anchor image brings one more image of its class) differ, and the
# test pipeline also takes image files (below).
_base_ = ['../fashion_mnist/resnet18_1xb64-vanilla_fashion-mnist.py']

model = dict(
    head=dict(
        type='BAKEHead',
        omega=0.5,
        temperature=4.0,
        bake_weight=1.0,
    ))

# The twins' work dirs are grouped by family, as the configs are.
work_dir = './work_dirs/bake/resnet18_1xb64_fashion-mnist'

train_dataloader = dict(
    batch_sampler=dict(type='ClassAwareBatchSampler', num_instances=2))

# Labels the head has no class for fail before training or testing starts
# (not in the plain twin, which stays runnable without mmbake).
custom_hooks = [dict(type='CheckLabelsHook')]

# The model zoo's entry for this config (bake_resnet18_1xb64_fashion-mnist)
# also classifies image files: mmpretrain's inference_model and
# ImageClassificationInferencer decode a file to 3-channel BGR and run the
# test pipeline without its loading step, so the pipeline turns colour into
# the one channel the network takes (ITU-R BT.601 luma, see ToGrayscale).
# The dataset's own 28x28 arrays pass through unchanged: same test numbers.
# Not in the plain twin's base, which stays runnable without mmbake.
test_pipeline = [
    dict(type='ToGrayscale'),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))

# Also set by the base runtime; repeated so that this file says plainly
# what it needs.
custom_imports = dict(imports=['mmbake'], allow_failed_imports=False)
