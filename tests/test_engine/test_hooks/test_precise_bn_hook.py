"""BatchSamplerPreciseBNHook: mmpretrain's precise BN with class-aware batches.

The BAKE Fashion-MNIST config, shrunk: 64 real 28x28 images, batch 8
(4 anchors + 4 mates, ``ClassAwareBatchSampler``), BN recomputed on 32
images after epoch 2 only. One process trains 3 epochs of 8 iterations:
epoch 3 moves the running statistics on from those the checkpoint of
epoch 2 holds, so a checkpoint saved before the update would show in the
final buffers of a run resumed from it. Two gloo ranks: the kill/resume run
of tests/test_reliability/test_kill_resume.py carries the hook.
"""
import argparse
import logging
import os.path as osp
import uuid

import pytest
import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from mmbake.engine.hooks import BatchSamplerPreciseBNHook

CONFIG = osp.join(
    osp.dirname(__file__), *[osp.pardir] * 3, 'configs', 'bake',
    'resnet18_1xb64_fashion-mnist.py')
UPDATED = 'Finish Precise BN, BN stats updated.'
HOOK = dict(type='BatchSamplerPreciseBNHook', num_samples=32, interval=2)


def tiny_cfg(cfg_options: list, work_dir: str, epochs: int) -> dict:
    """The config with the shared tiny options and the hook (see above)."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(
        parser.parse_args(['--cfg-options', *cfg_options]).cfg_options)
    cfg.merge_from_dict(
        dict(
            work_dir=work_dir,
            train_cfg=dict(max_epochs=epochs),
            # No random transform: with num_workers=0 they draw from
            # numpy's global RNG in this process, whose state after a
            # resume differs from the uninterrupted run's.
            train_dataloader=dict(
                batch_size=8,
                dataset=dict(indices=64, pipeline=[dict(type='PackInputs')])),
            val_dataloader=None,
            val_cfg=None,
            val_evaluator=None,
            default_hooks=dict(checkpoint=dict(max_keep_ckpts=-1)),
            custom_hooks=[HOOK]))
    return cfg.to_dict()


def train(cfg: dict, **changes) -> tuple:
    """Train (each runner needs a name of its own in one process): the
    messages logged, the runner and its model's state."""
    runner = Runner.from_cfg(
        Config(dict(cfg, experiment_name=uuid.uuid4().hex, **changes)))
    handler = logging.Handler(logging.INFO)
    messages = []
    handler.emit = lambda record: messages.append(record.getMessage())
    runner.logger.addHandler(handler)
    runner.train()
    runner.logger.removeHandler(handler)
    model = getattr(runner.model, 'module', runner.model)
    return messages, runner, model.state_dict()


def check_one_update(messages: list, num_iters: int) -> None:
    """One update, after epoch 2, of num_iters batches, before the save."""
    assert messages.count(UPDATED) == 1
    assert f'run {num_iters} iters...' in ' '.join(messages)
    assert messages.index(UPDATED) < messages.index(
        'Saving checkpoint at 2 epochs')


def check_refused(runner: Runner, num_samples: int, text: str) -> None:
    """A num_samples below one batch per rank is refused, naming it all."""
    with pytest.raises(ValueError, match=text):
        BatchSamplerPreciseBNHook(num_samples=num_samples).before_train(runner)


def assert_same_state(state: dict, expected: dict) -> None:
    assert state.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(state[key], expected[key], msg=key)


def test_update_before_the_save_and_resume(tiny_cfg_options, tmp_path):
    cfg = tiny_cfg(tiny_cfg_options, str(tmp_path / 'full'), epochs=3)
    messages, runner, full = train(cfg)
    check_one_update(messages, 4)  # 32 // (8 x 1 rank)
    check_refused(
        runner, 7, r'num_samples \(7\).*batch_size x world_size '
        r'\(8 x 1 = 8\).*zero')
    for kwargs in (dict(num_samples=0), dict(interval=True)):
        with pytest.raises(ValueError, match='must be an int >= 1'):
            BatchSamplerPreciseBNHook(**kwargs)

    _, _, resumed = train(
        cfg,
        work_dir=str(tmp_path / 'resumed'),
        resume=True,
        load_from=str(tmp_path / 'full' / 'epoch_2.pth'))
    assert any('running_var' in key for key in full)
    assert_same_state(resumed, full)
