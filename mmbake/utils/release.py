"""Write a release checkpoint under OpenMMLab's name for published weights."""
import datetime
import hashlib
import io
from typing import Any, Dict

import torch

from .atomic_write import write_atomically


def save_release(release: Dict[str, Any], out_file: str) -> str:
    """Write ``release`` as ``<out_file stem>_<YYYYMMDD>-<sha256[:8]>.pth``.

    The dict is serialised in memory (written to a file, ``torch.save``
    would embed that file's name in the archive, and the hash would depend
    on it), read back with ``torch.load(weights_only=True)``, the promise of
    a release, and written with :func:`write_atomically`. Nothing is
    written if the check fails.

    Args:
        release (dict): ``state_dict`` and plain-data ``meta``.
        out_file (str): The requested path, with or without ``.pth``;
            missing folders are created.

    Returns:
        str: Path of the written file.
    """
    buffer = io.BytesIO()
    torch.save(release, buffer)
    data = buffer.getvalue()
    torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    stem = out_file[:-len('.pth')] if out_file.endswith('.pth') else out_file
    sha8 = hashlib.sha256(data).hexdigest()[:8]
    final = f'{stem}_{datetime.date.today():%Y%m%d}-{sha8}.pth'
    write_atomically(lambda f: f.write(data), final)
    return final
