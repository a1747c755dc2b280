"""write_atomically: a kill in the middle of a write loses nothing."""
import glob
import os
import signal
import subprocess
import sys

from mmbake.utils import write_atomically

# Writes 'old' atomically, then starts to write 'new' and waits, killed.
KILLED_WRITER = '''
import sys, time
from mmbake.utils import write_atomically
write_atomically(lambda f: f.write(b'old'), sys.argv[1])
def half_then_wait(f):
    f.write(b'new, half wri')
    f.flush()
    print('WRITING', flush=True)
    time.sleep(600)
write_atomically(half_then_wait, sys.argv[1])
'''


def test_write_atomically_survives_a_kill(tmp_path):
    path = str(tmp_path / 'epoch_2.pth')
    proc = subprocess.Popen([sys.executable, '-c', KILLED_WRITER, path],
                            stdout=subprocess.PIPE,
                            text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == 'WRITING'
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    # The final name holds the last complete write; the half-written data
    # is only in the dead writer's temporary.
    with open(path, 'rb') as f:
        assert f.read() == b'old'
    temporary = str(tmp_path / f'.epoch_2.pth.{proc.pid}.tmp')
    assert glob.glob(str(tmp_path / '.*.tmp')) == [temporary]
    # The next write of that name completes and removes the dead temporary.
    write_atomically(lambda f: f.write(b'new'), path)
    with open(path, 'rb') as f:
        assert f.read() == b'new'
    assert os.listdir(tmp_path) == ['epoch_2.pth']
