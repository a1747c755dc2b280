"""A kill while a checkpoint is saved leaves a work dir that resumes.

A real BAKE run (one process) is parked inside ``torch.save`` of its
epoch-2 checkpoint (the pause hook adds an object that sleeps while it is
pickled) and killed with SIGKILL. The config keeps one checkpoint
(``max_keep_ckpts=1``), as the Fashion-MNIST configs do: mmengine 0.10.7's
``CheckpointHook`` would already have deleted ``epoch_1.pth`` then, and
would write ``epoch_2.pth`` in place. mmbake's ``SafeCheckpointHook``
writes through a temporary file and deletes outdated checkpoints only
after the new one is saved. A kill while the bytes are written leaves a
partial temporary beside the same intact files; one is planted, and the
next save of that name removes it.

The same work dir then gets a truncated ``epoch_2.pth`` and a pointer to
it, as a writer without that fix could leave: ``--resume PATH`` refuses
the file with a message, and ``--resume`` skips it for the newest complete
checkpoint and finishes the schedule.
"""
import glob
import os.path as osp
import sys

from .tool_runs import (BAKE_CONFIG, PAUSE_ENV, PAUSE_MARKER, RUN_TIMEOUT_S,
                        TRAIN, kill_group, load_checkpoint, read, start,
                        wait_for, write_config)


def test_kill_while_saving_leaves_a_resumable_work_dir(
        tmp_path, fashion_mnist_small_root, call_tool, tool_env):
    config = write_config(
        str(tmp_path / 'bake_tiny.py'), fashion_mnist_small_root, length=2)
    work = str(tmp_path / 'work')
    first = osp.join(work, 'epoch_1.pth')
    second = osp.join(work, 'epoch_2.pth')
    pointer = osp.join(work, 'last_checkpoint')
    log = str(tmp_path / 'killed.log')

    def temporaries():
        return glob.glob(osp.join(work, '.epoch_2.pth.*.tmp'))

    proc = start([sys.executable, TRAIN, config, '--work-dir', work],
                 dict(tool_env, **{PAUSE_ENV: 'save:2'}), log)
    try:
        wait_for(lambda: PAUSE_MARKER in read(log), proc, log)
    finally:
        kill_group(proc)

    # Killed in the middle of saving epoch 2: no epoch_2.pth at all, and
    # the previous checkpoint and the pointer to it are intact.
    assert not osp.exists(second) and temporaries() == []
    with open(pointer) as f:
        assert f.read().strip() == first
    assert load_checkpoint(first)['meta']['epoch'] == 1
    # What a kill while the temporary is written leaves (the dead run's).
    with open(osp.join(work, f'.epoch_2.pth.{proc.pid}.tmp'), 'wb') as f:
        f.write(b'PK\x03\x04 half a checkpoint')

    # What an in-place writer could leave: half a file, and the pointer.
    with open(first, 'rb') as f:
        data = f.read()
    with open(second, 'wb') as f:
        f.write(data[:len(data) // 2])
    with open(pointer, 'w') as f:
        f.write(second)

    # The killed run was a process; what follows calls the tool's main().
    refused = call_tool([
        sys.executable, TRAIN, config, '--work-dir', work, '--resume', second
    ],
                        timeout=RUN_TIMEOUT_S)
    assert refused.returncode == 2
    assert f'--resume checkpoint {second} is not complete' in refused.stderr
    assert 'Traceback' not in refused.stderr

    resumed = call_tool(
        [sys.executable, TRAIN, config, '--work-dir', work, '--resume'],
        timeout=RUN_TIMEOUT_S)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-4000:]
    assert (f'warning: {pointer} names {second!r}, which is missing or '
            f'incomplete; resuming from {first}') in resumed.stderr
    assert 'resumed epoch: 1' in out
    assert load_checkpoint(second)['meta']['epoch'] == 2
    with open(pointer) as f:
        assert f.read().strip() == second
    # The outdated checkpoint went after the new one was saved, and the
    # dead run's temporary went with the next save of its name.
    assert not osp.exists(first)
    assert temporaries() == []


def test_broken_pointer_without_checkpoints_is_a_clear_error(
        tmp_path, call_tool, tiny_cfg_options):
    work = tmp_path / 'work'
    work.mkdir()
    missing = str(work / 'epoch_3.pth')
    (work / 'last_checkpoint').write_text(missing)
    result = call_tool([
        sys.executable, TRAIN, BAKE_CONFIG, '--work-dir',
        str(work), '--resume', '--cfg-options', *tiny_cfg_options
    ],
                       timeout=120)
    assert result.returncode == 2
    assert (f"names {missing!r}, which is missing or incomplete, and {work} "
            'holds no other complete checkpoint; train without --resume to '
            'start over') in result.stderr
    assert 'Traceback' not in result.stderr
    # Nothing was trained over the work dir.
    assert sorted(p.name for p in work.iterdir()) == ['last_checkpoint']
