"""The four arms of the equal-compute study (benchmarks/equal_compute.py).

What each arm trains (epochs, iterations, images, learning-rate drops), the
config file that makes ``tools/train.py`` train it, and the check of a
finished run's checkpoint against that promise.
"""
import ast
from typing import Dict, List, Optional

ARMS = ('ce_same_epochs', 'ce_same_iterations', 'ls_same_iterations',
        'bake_authors')
# Every arm is generated from the BAKE twin of the Fashion-MNIST configs:
# the same model, data pipeline and runtime.
BASE_CONFIG = 'configs/bake/resnet18_1xb64_fashion-mnist.py'
# The authors' CIFAR-100 setting: M = 3 mates per anchor.
NUM_INSTANCES = 4
LABEL_SMOOTH_VAL = 0.1
BAKE_ARGS = dict(omega=0.5, temperature=4.0, bake_weight=1.0)
SGD_ARGS = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=False)
NUM_BINS = 15
TEST_IMAGES = 10000


def arm_epochs(arm: str, epochs: int) -> int:
    """Epochs of an arm: ``4E`` for the same-iteration controls, else E.

    Args:
        arm (str): One of ``ARMS``.
        epochs (int): ``E``, the epochs of the authors' accounting.

    Returns:
        int: The arm's ``train_cfg.max_epochs``.
    """
    _check_arm(arm)
    return epochs * NUM_INSTANCES if arm.endswith('same_iterations') \
        else epochs


def iterations_per_epoch(arm: str, train_images: int,
                         batch_size: int) -> int:
    """Batches of one epoch of an arm (all of them full).

    A plain epoch visits each of the ``N`` images once: ``N / B`` batches.
    An ``epoch_mode='anchors'`` epoch makes each image an anchor once, with
    ``B / 4`` anchors per batch: ``4 N / B`` batches.

    Args:
        arm (str): One of ``ARMS``.
        train_images (int): ``N``, a multiple of ``batch_size``.
        batch_size (int): ``B``, a multiple of ``NUM_INSTANCES``.

    Returns:
        int: Iterations per epoch.
    """
    _check_arm(arm)
    if arm == 'bake_authors':
        return train_images // (batch_size // NUM_INSTANCES)
    return train_images // batch_size


def arm_plan(arm: str, train_images: int, batch_size: int,
             epochs: int) -> Dict[str, object]:
    """What a run of an arm must train, and its learning-rate milestones.

    Args:
        arm (str): One of ``ARMS``.
        train_images (int): ``N``.
        batch_size (int): ``B``.
        epochs (int): ``E``.

    Returns:
        dict: ``epochs``, ``iterations``, ``images_seen`` and
        ``milestones`` (iterations after which the learning rate drops
        tenfold: 50 % and 75 % of the arm's iterations).

    Raises:
        ValueError: If the milestones would not land on whole iterations.
    """
    num_epochs = arm_epochs(arm, epochs)
    iterations = num_epochs * iterations_per_epoch(arm, train_images,
                                                   batch_size)
    if iterations % 4:
        raise ValueError(
            f'{arm}: {iterations} iterations is not a multiple of 4, so the '
            'learning-rate drops at 50 % and 75 % would not land on whole '
            'iterations; choose epochs, train_images and batch_size so that '
            'it is')
    return dict(
        epochs=num_epochs,
        iterations=iterations,
        images_seen=iterations * batch_size,
        milestones=[iterations // 2, iterations * 3 // 4])


def _check_arm(arm: str) -> None:
    if arm not in ARMS:
        raise ValueError(f'arm must be one of {ARMS}, but got {arm!r}')


def _head(arm: str) -> dict:
    """The arm's head, stated in full (not merged into the base's)."""
    ce = dict(type='CrossEntropyLoss', loss_weight=1.0)
    common = dict(num_classes=10, in_channels=128, topk=(1, ))
    if arm == 'bake_authors':
        return dict(type='BAKEHead', loss=ce, **common, **BAKE_ARGS)
    if arm == 'ls_same_iterations':
        loss = dict(type='LabelSmoothLoss', label_smooth_val=LABEL_SMOOTH_VAL,
                    loss_weight=1.0)
        return dict(type='LinearClsHead', loss=loss, **common)
    return dict(type='LinearClsHead', loss=ce, **common)


def _batch_sampler(arm: str) -> Optional[dict]:
    """The arm's batch sampler; None gives the plain DataLoader batches."""
    if arm == 'bake_authors':
        return dict(type='ClassAwareBatchSampler',
                    num_instances=NUM_INSTANCES, epoch_mode='anchors')
    return None


def arm_config(arm: str, train_images: int, batch_size: int, epochs: int,
               base: str = BASE_CONFIG) -> str:
    """The text of an arm's config file.

    Args:
        arm (str): One of ``ARMS``.
        train_images (int): ``N``: the first ``N`` training images.
        batch_size (int): ``B``.
        epochs (int): ``E``.
        base (str): The config it inherits (path as written in
            ``_base_``). Defaults to ``BASE_CONFIG``.

    Returns:
        str: Python config text (seed and data root come as
        ``--cfg-options``).
    """
    plan = arm_plan(arm, train_images, batch_size, epochs)
    num_epochs = plan['epochs']
    lines = [
        f'# Arm {arm!r} of benchmarks/equal_compute.py (generated).',
        f'_base_ = [{base!r}]',
        '',
        f'model = dict(head={_py(dict(_delete_=True, **_head(arm)))})',
        '',
        'train_dataloader = dict(',
        f'    batch_size={batch_size},',
        f'    batch_sampler={_py(_batch_sampler(arm))},',
        f'    dataset=dict(indices={train_images}),',
        '    num_workers=0,',
        '    persistent_workers=False)',
        'val_dataloader = dict(num_workers=0, persistent_workers=False)',
        'test_dataloader = val_dataloader',
        '',
        '# The authors\' small-scale schedule: no warm-up, lr x0.1 at 50 % '
        'and',
        '# 75 % of the iterations.',
        'optim_wrapper = dict(',
        f'    optimizer={_py(dict(_delete_=True, type="SGD", **SGD_ARGS))})',
        'param_scheduler = [',
        '    dict(type=\'MultiStepLR\', by_epoch=False, '
        f'milestones={plan["milestones"]!r}, gamma=0.1),',
        ']',
        f'train_cfg = dict(by_epoch=True, max_epochs={num_epochs}, '
        f'val_interval={num_epochs})',
        'default_hooks = dict(',
        f'    checkpoint=dict(interval={num_epochs}, max_keep_ckpts=1))',
        '',
        'val_evaluator = [',
        '    dict(type=\'Accuracy\', topk=(1, )),',
        f'    dict(type=\'Calibration\', num_bins={NUM_BINS}),',
        ']',
        'test_evaluator = val_evaluator',
        f'auto_scale_lr = dict(base_batch_size={batch_size})',
        '',
    ]
    return '\n'.join(lines)


def _py(value: object) -> str:
    """Config-file text of a value, dicts written as ``dict(key=value)``."""
    if isinstance(value, dict):
        return 'dict(' + ', '.join(f'{k}={_py(v)}'
                                   for k, v in value.items()) + ')'
    return repr(value)


def _literal(node: ast.AST) -> object:
    """A value of mmengine's ``pretty_text``: literals and ``dict(...)``.

    Raises:
        ValueError: On anything else (nothing is executed).
    """
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id == 'dict' and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys,
                                                          node.values)}
    return ast.literal_eval(node)


def trained_config(pretty_text: str) -> Dict[str, object]:
    """The top-level settings a checkpoint's config text holds.

    Args:
        pretty_text (str): ``meta['cfg']`` of a checkpoint (mmengine's
            ``Config.pretty_text``).

    Returns:
        dict: Name -> value of every top-level assignment (parsed, not
        executed).
    """
    values = {}
    for stmt in ast.parse(pretty_text).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                isinstance(stmt.targets[0], ast.Name):
            values[stmt.targets[0].id] = _literal(stmt.value)
    return values


def verify_run(meta: dict, arm: str, seed: int, train_images: int,
               batch_size: int, epochs: int) -> Dict[str, int]:
    """Check a final checkpoint against what the arm promises.

    The checkpoint's meta holds the epoch and iteration counters of the
    runner and the config it trained with. Every batch of every arm is full
    (``N`` is a multiple of ``B``; the class-aware sampler only yields full
    batches), so the images seen are the iterations times the batch size.

    Args:
        meta (dict): ``meta`` of the run's final checkpoint.
        arm (str): The run's arm.
        seed (int): The run's seed.
        train_images (int): ``N``.
        batch_size (int): ``B``.
        epochs (int): ``E``.

    Returns:
        dict[str, int]: ``epochs``, ``iterations`` and ``images_seen``.

    Raises:
        RuntimeError: Naming every mismatch.
    """
    plan = arm_plan(arm, train_images, batch_size, epochs)
    cfg = trained_config(meta['cfg'])
    loader = cfg.get('train_dataloader', {})
    head = cfg.get('model', {}).get('head', {})
    schedule = cfg.get('param_scheduler', [{}])
    found = {
        'epoch': int(meta['epoch']),
        'iter': int(meta['iter']),
        'seed': meta.get('seed'),
        'batch_size': loader.get('batch_size'),
        'train_images': loader.get('dataset', {}).get('indices'),
        'batch_sampler': loader.get('batch_sampler'),
        'head': head.get('type'),
        'loss': head.get('loss', {}).get('type'),
        'milestones': schedule[0].get('milestones'),
    }
    expected = {
        'epoch': plan['epochs'],
        'iter': plan['iterations'],
        'seed': seed,
        'batch_size': batch_size,
        'train_images': train_images,
        'batch_sampler': _batch_sampler(arm),
        'head': _head(arm)['type'],
        'loss': _head(arm)['loss']['type'],
        'milestones': plan['milestones'],
    }
    wrong = [
        f'{key}: {found[key]!r}, expected {expected[key]!r}'
        for key in expected if found[key] != expected[key]
    ]
    if wrong:
        raise RuntimeError(f'{arm} seed {seed} did not train as promised: '
                           + '; '.join(wrong))
    return dict(
        epochs=found['epoch'],
        iterations=found['iter'],
        images_seen=found['iter'] * found['batch_size'])


def final_metrics(records: List[dict], epochs: int) -> Dict[str, float]:
    """Top-1, NLL and ECE of the validation after the final epoch.

    Args:
        records (list[dict]): mmengine's ``scalars.json`` records.
        epochs (int): The run's final epoch.

    Returns:
        dict[str, float]: ``top1``, ``nll``, ``ece``.

    Raises:
        RuntimeError: If the last validation is not that of ``epochs``.
    """
    val = [r for r in records if 'accuracy/top1' in r]
    if not val or int(val[-1]['step']) != epochs:
        raise RuntimeError(f'no validation after epoch {epochs}: {val}')
    last = val[-1]
    return dict(
        top1=float(last['accuracy/top1']),
        nll=float(last['calibration/nll']),
        ece=float(last['calibration/ece']))
