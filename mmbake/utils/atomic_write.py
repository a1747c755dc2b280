"""Write a local file so that it is either complete or absent."""
import contextlib
import os
import os.path as osp
from typing import IO, Callable


def _remove_stale_temporaries(directory: str, name: str) -> None:
    """Delete temporaries of ``name`` left by processes that were killed.

    A temporary is ``.<name>.<pid>.tmp``; one whose process is gone can
    never be completed.
    """
    prefix = f'.{name}.'
    for entry in os.listdir(directory):
        if not (entry.startswith(prefix) and entry.endswith('.tmp')):
            continue
        pid = entry[len(prefix):-len('.tmp')]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.remove(osp.join(directory, entry))
        except OSError:  # alive, owned by someone else
            pass


def write_atomically(write: Callable[[IO[bytes]], None],
                     filename: str) -> None:
    """Write a local file so that it is either complete or absent.

    The data goes to the hidden temporary ``.<name>.<pid>.tmp`` in the same
    folder, is flushed and fsync'ed, and the temporary is then renamed onto
    ``filename`` with ``os.replace`` (atomic on POSIX and Windows). A process
    killed at any moment leaves the previous ``filename`` (or none) and at
    most a temporary, which the next write of that name removes.

    Args:
        write (Callable): Called with the open binary temporary file.
        filename (str): The final path.
    """
    directory = osp.dirname(osp.abspath(filename))
    os.makedirs(directory, exist_ok=True)
    name = osp.basename(filename)
    _remove_stale_temporaries(directory, name)
    temporary = osp.join(directory, f'.{name}.{os.getpid()}.tmp')
    try:
        with open(temporary, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, filename)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    # Make the rename itself durable; not possible on every platform.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
