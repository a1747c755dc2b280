"""Write a local file so that it is either complete or absent."""
import contextlib
import os
import os.path as osp
from typing import IO, Callable


def temporary_path(filename: str) -> str:
    """The hidden temporary ``.<name>.<pid>.tmp`` beside ``filename``.

    Temporaries of the same name whose process is gone can never be
    completed; they are deleted here. The folder is created if missing.

    Args:
        filename (str): The final path.

    Returns:
        str: The temporary's path, for :func:`replace_atomically`.
    """
    directory = osp.dirname(osp.abspath(filename))
    os.makedirs(directory, exist_ok=True)
    prefix = f'.{osp.basename(filename)}.'
    for entry in os.listdir(directory):
        pid = entry[len(prefix):-len('.tmp')]
        if not (entry.startswith(prefix) and entry.endswith('.tmp')
                and pid.isdigit() and int(pid) != os.getpid()):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.remove(osp.join(directory, entry))
        except OSError:  # alive, owned by someone else
            pass
    return osp.join(directory, f'{prefix}{os.getpid()}.tmp')


def replace_atomically(temporary: str, filename: str) -> None:
    """Make the complete file ``temporary`` durable and rename it onto
    ``filename`` (``os.replace``: atomic on POSIX and Windows).

    Args:
        temporary (str): A file from :func:`temporary_path`, fully written.
        filename (str): The final path.
    """
    with open(temporary, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(temporary, filename)
    # Make the rename itself durable; not possible on every platform.
    with contextlib.suppress(OSError):
        fd = os.open(osp.dirname(osp.abspath(filename)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomically(write: Callable[[IO[bytes]], None],
                     filename: str) -> None:
    """Write a local file so that it is either complete or absent.

    The data goes to :func:`temporary_path`, which
    :func:`replace_atomically` then renames onto ``filename``. A process
    killed at any moment leaves the previous ``filename`` (or none) and at
    most a temporary, which the next write of that name removes.

    Args:
        write (Callable): Called with the open binary temporary file.
        filename (str): The final path.
    """
    temporary = temporary_path(filename)
    try:
        with open(temporary, 'wb') as f:
            write(f)
        replace_atomically(temporary, filename)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
