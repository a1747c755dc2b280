"""Temperature scaling on held-out images: is BAKE's test NLL then better
than cross-entropy's and label smoothing's?

The budget map's regime (its config, arms, 1,024 iterations of 128 images,
groups N = 1,024 and 8,192, seeds 0-2). After each run,
``tools/analysis_tools/calibrate.py`` fits one temperature on training
images 50,000-54,999 (never in a run's first N) and folds it into the final
layer; the official 10,000 test images are evaluated before and after.
"""
import os.path as osp
import runpy

MAP = runpy.run_path(
    osp.join(
        osp.dirname(osp.abspath(__file__)), 'budget_map_fashion_mnist.py'))
TRAIN_IMAGES = (1024, 8192)
ARMS = ('ce', 'ls', 'bake_default')

STUDY = dict(
    name='calibration_fashion_mnist',
    question='After temperature scaling on held-out training images, is '
    'BAKE\'s test NLL better than cross-entropy\'s and label smoothing\'s, '
    'and by how much?',
    data='Fashion-MNIST: the first N official training images; the '
    'temperature fitted on training images 50,000-54,999; the official '
    '10,000 test images, evaluated once after the final epoch and once '
    'after temperature scaling',
    model=MAP['STUDY']['model'],
    schedule=MAP['STUDY']['schedule'],
    arms_note='ce: cross-entropy; ls: label smoothing 0.1; bake_default: '
    'BAKEHead (omega 0.5, T 4, lambda 1), num_instances=2, '
    'epoch_mode=images; as in budget_map_fashion_mnist',
    tuning='none: the budget map\'s settings; one temperature per run, '
    'fitted by calibrate.py (NLL minimum on the held-out images); declared '
    'before any run, nothing changed after seeing results; 3 seeds',
    record_scores=True,
    calibrate=dict(
        config='benchmarks/configs/resnet18_1xb128-multistep_'
        'fashion-mnist-heldout.py',
        options=[]),
    arms={arm: MAP['STUDY']['arms'][arm]
          for arm in ARMS},
    runs=[
        run for run in MAP['STUDY']['runs']
        if run['arm'] in ARMS and run['group'] in TRAIN_IMAGES
    ],
    compare=[['bake_default', 'ce'], ['bake_default', 'ls'], ['ls', 'ce']],
    group_label='training images N',
)
