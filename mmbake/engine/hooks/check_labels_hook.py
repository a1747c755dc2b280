"""Refuse data whose labels the model's head has no class for."""
from typing import Any, Optional, Sequence

import numpy as np
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from ...datasets import get_dataset_labels


def check_label_values(model: Any,
                       labels: Sequence[int],
                       loader: str,
                       classes: Optional[Sequence[str]] = None) -> None:
    """Refuse labels >= ``model.head.num_classes`` (cross-entropy would fail
    in the first step: ``IndexError: Target 7 is out of bounds``). Models
    without ``head.num_classes`` pass.

    Args:
        model (Any): The model (a DDP wrapper is unwrapped).
        labels (Sequence[int]): Class indices of samples of ``loader``.
        loader (str): Their dataloader's config key, for the message.
        classes (Sequence[str], optional): The dataset's class names, for
            its class count; else the largest label + 1 counts.

    Raises:
        ValueError: Naming the largest label, ``model.head.num_classes`` and
            the dataset's class count.
    """
    model = model.module if is_model_wrapper(model) else model
    num_classes = getattr(getattr(model, 'head', None), 'num_classes', None)
    if not isinstance(num_classes, int) or num_classes < 1:
        return
    labels = np.asarray(labels, dtype=np.int64)
    beyond = np.flatnonzero(labels >= num_classes)
    if beyond.size == 0:
        return
    num_data_classes = len(classes) if classes else int(labels.max()) + 1
    raise ValueError(
        f'{loader}.dataset has labels up to {int(labels.max())} (first '
        f'sample {int(beyond[0])}; {beyond.size} of {labels.size} samples '
        f'have a label >= {num_classes}), but model.head.num_classes is '
        f'{num_classes}. The dataset has {num_data_classes} classes: set '
        f'model.head.num_classes={num_data_classes} (and '
        'data_preprocessor.num_classes, where the config sets it)')


def check_labels_fit(model: Any, dataset: Any, loader: str) -> None:
    """:func:`check_label_values` on the labels of ``dataset``, read
    without loading images; multi-label and unlabelled datasets pass.

    Args:
        model (Any): The model.
        dataset (Any): The built dataset of ``loader``.
        loader (str): Its dataloader's config key, for the message.
    """
    try:
        labels = get_dataset_labels(dataset)
    except ValueError:
        return
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    check_label_values(model, labels, loader, classes)


@HOOKS.register_module()
class CheckLabelsHook(Hook):
    """Check that the head has a class for every label before a loop runs.

    Before training, the training and validation sets (validation would
    otherwise fail only after the first epoch); before testing, the test
    set; each dataloader once. A config lists it in ``custom_hooks``; it
    serves mmpretrain's own ``tools/train.py`` and ``tools/test.py`` too.
    """

    def __init__(self) -> None:
        self._checked = set()

    def _check(self, runner, loader: str) -> None:
        if loader not in self._checked:
            self._checked.add(loader)
            check_labels_fit(runner.model,
                             getattr(runner, loader).dataset, loader)

    def before_train(self, runner) -> None:
        self._check(runner, 'train_dataloader')
        if runner.val_loop is not None:
            self.before_val(runner)

    def before_val(self, runner) -> None:
        self._check(runner, 'val_dataloader')

    def before_test(self, runner) -> None:
        self._check(runner, 'test_dataloader')
