# mmpretrain's own runtime (default_scope='mmpretrain', hooks, visualizer),
# inherited through the package so that `mmpretrain::` bases stay exercised.
_base_ = 'mmpretrain::_base_/default_runtime.py'

default_hooks = dict(
    # Small datasets: an epoch has only a few hundred iterations.
    logger=dict(type='LoggerHook', interval=50),
    # Keep the last checkpoint only; tiny models, but work dirs add up.
    # mmbake's CheckpointHook: a kill while saving leaves a checkpoint to
    # resume from, and resume works with torch's weights-only loading, also
    # under mmpretrain's own tools/train.py (docs/compatibility.md).
    checkpoint=dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=1),
)

# Reproducible by default: the benchmark compares paired seeds.
randomness = dict(seed=0, deterministic=False)

# Load the plugin, so that a config works under mmpretrain's own
# tools/train.py too (BAKEHead, ClassAwareBatchSampler, SafeCheckpointHook).
custom_imports = dict(imports=['mmbake'], allow_failed_imports=False)
