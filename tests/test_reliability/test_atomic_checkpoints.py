"""A kill while a checkpoint is saved leaves a work dir that resumes.

A real BAKE run (one process, ``max_keep_ckpts=1`` as in the Fashion-MNIST
configs) is parked inside ``torch.save`` of its epoch-2 checkpoint (the
pause hook adds an object that sleeps while it is pickled) and killed with
SIGKILL: mmengine 0.10.7's ``CheckpointHook`` would have deleted
``epoch_1.pth`` already and would write ``epoch_2.pth`` in place;
``SafeCheckpointHook`` saves through a temporary and deletes the outdated
checkpoint last. A kill while the bytes are written leaves a partial
temporary (one is planted), which the next save of that name removes.
Then a truncated ``epoch_2.pth`` and a pointer to it, as an in-place writer
could leave: ``--resume PATH`` refuses it with a message, ``--resume``
takes the newest complete checkpoint and finishes the schedule; with none
left, ``--resume`` is a clear error.
"""
import glob
import os
import os.path as osp
import sys

from .tool_runs import (PAUSE_ENV, PAUSE_MARKER, RUN_TIMEOUT_S, TRAIN,
                        kill_group, load_checkpoint, read, start, wait_for,
                        write_config)


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

    train = [sys.executable, TRAIN, config, '--work-dir', work]
    proc = start(train, dict(tool_env, **{PAUSE_ENV: 'save:2'}), log)
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
    refused = call_tool([*train, '--resume', second], timeout=RUN_TIMEOUT_S)
    assert refused.returncode == 2
    assert f'--resume checkpoint {second} is not complete' in refused.stderr
    assert 'Traceback' not in refused.stderr

    resumed = call_tool([*train, '--resume'], timeout=RUN_TIMEOUT_S)
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

    # A pointer to a missing file, and no other checkpoint: a clear error,
    # and nothing trained over the work dir.
    os.remove(second)
    missing = osp.join(work, 'epoch_3.pth')
    with open(pointer, 'w') as f:
        f.write(missing)
    result = call_tool([*train, '--resume'], timeout=RUN_TIMEOUT_S)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert (f"names {missing!r}, which is missing or incomplete, and {work} "
            'holds no other complete checkpoint; train without --resume to '
            'start over') in result.stderr
    assert not glob.glob(osp.join(work, '*.pth'))
