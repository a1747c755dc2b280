"""Build the Fashion-MNIST data root that mmpretrain's ``FashionMNIST`` reads.

mmpretrain's stock ``FashionMNIST`` dataset class (``download=False``) reads
the four *uncompressed* IDX files from ``data_root``. This tool fills such a
folder from one of two sources:

- ``debian``: the Debian package ``dataset-fashion-mnist``
  (``apt-get install dataset-fashion-mnist``), which ships the full official
  set as ``.gz`` files under ``/usr/share/datasets/fashion-mnist``. Debian
  recompressed them, so their checksums differ from upstream's and
  mmpretrain's own download check would reject them; we gunzip them here.
- ``download``: mmpretrain's own download through the ``FashionMNIST`` class
  (needs internet access).

``auto`` (the default) takes the Debian files where they are present and
falls back to the download otherwise.

Example::

    python tools/dataset_converters/prepare_fashion_mnist.py \
        --out-dir data/fashion_mnist
"""
import argparse
import gzip
import os
import os.path as osp
import shutil
import struct
import sys
import tempfile
from typing import Dict, List, Optional

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
DEBIAN_PACKAGE = 'dataset-fashion-mnist'
SOURCES = ('auto', 'debian', 'download')

# Uncompressed file name -> (IDX magic number, number of items). The magic
# is 0x801 for label files (unsigned bytes, 1 dimension) and 0x803 for image
# files (unsigned bytes, 3 dimensions).
EXPECTED_FILES: Dict[str, tuple] = {
    'train-images-idx3-ubyte': (0x803, 60000),
    'train-labels-idx1-ubyte': (0x801, 60000),
    't10k-images-idx3-ubyte': (0x803, 10000),
    't10k-labels-idx1-ubyte': (0x801, 10000),
}


class PrepareError(RuntimeError):
    """Raised when no source can provide the Fashion-MNIST files."""


def check_idx_file(path: str, magic: int, num_items: int) -> Optional[str]:
    """Check the header and the size of one uncompressed IDX file.

    Args:
        path (str): The file to check.
        magic (int): The expected IDX magic number.
        num_items (int): The expected number of items (images or labels).

    Returns:
        str, optional: None when the file is complete, otherwise a short
        description of what is wrong with it.
    """
    if not osp.isfile(path):
        return 'missing'
    with open(path, 'rb') as f:
        header = f.read(8)
    if len(header) < 8:
        return 'truncated header'
    found_magic, found_items = struct.unpack('>II', header)
    if found_magic != magic or found_items != num_items:
        return (f'header says magic {found_magic:#x} with {found_items} '
                f'items, expected {magic:#x} with {num_items}')
    # Images: 16-byte header + 28 * 28 bytes each; labels: 8 + 1 each.
    expected_size = (16 + num_items * 28 * 28 if magic == 0x803 else
                     8 + num_items)
    if os.path.getsize(path) != expected_size:
        return (f'size {os.path.getsize(path)} bytes, expected '
                f'{expected_size}')
    return None


def find_problems(data_root: str) -> List[str]:
    """List what is missing or broken in a data root.

    Args:
        data_root (str): The folder to check.

    Returns:
        list[str]: One line per bad file; empty when the root is complete.
    """
    problems = []
    for name, (magic, num_items) in EXPECTED_FILES.items():
        problem = check_idx_file(osp.join(data_root, name), magic, num_items)
        if problem is not None:
            problems.append(f'{name}: {problem}')
    return problems


def debian_files_present(debian_dir: str = DEBIAN_DIR) -> bool:
    """Whether the Debian package's four ``.gz`` files are all present.

    Args:
        debian_dir (str): Where the package installs them.
            Defaults to ``/usr/share/datasets/fashion-mnist``.

    Returns:
        bool: True when all four files exist.
    """
    return all(
        osp.isfile(osp.join(debian_dir, name + '.gz'))
        for name in EXPECTED_FILES)


def _prepare_from_debian(out_dir: str, debian_dir: str) -> None:
    """Gunzip the Debian package's files into ``out_dir``."""
    for name in EXPECTED_FILES:
        # Write to a temporary name and rename, so that an interrupted run
        # never leaves a half-written file that looks complete.
        fd, tmp_path = tempfile.mkstemp(prefix=f'.{name}.', dir=out_dir)
        try:
            with gzip.open(osp.join(debian_dir, name + '.gz'), 'rb') as src, \
                    os.fdopen(fd, 'wb') as dst:
                shutil.copyfileobj(src, dst)
            # mkstemp creates owner-only files; a data root is shared data.
            os.chmod(tmp_path, 0o644)
            os.replace(tmp_path, osp.join(out_dir, name))
        except BaseException:
            if osp.exists(tmp_path):
                os.remove(tmp_path)
            raise


def _prepare_by_download(out_dir: str) -> None:
    """Let mmpretrain's ``FashionMNIST`` class download and extract."""
    from mmpretrain.datasets import FashionMNIST

    # Building the dataset runs its own download (with upstream checksums)
    # and extraction into data_root when the files are not there yet.
    FashionMNIST(data_root=out_dir, split='train', download=True)


def prepare_fashion_mnist(out_dir: str,
                          source: str = 'auto',
                          debian_dir: str = DEBIAN_DIR) -> str:
    """Make ``out_dir`` a complete data root for mmpretrain's FashionMNIST.

    Nothing is rewritten when the folder is already complete.

    Args:
        out_dir (str): The data root to fill, created if needed.
        source (str): ``'debian'``, ``'download'`` or ``'auto'`` (Debian
            files where present, else the download). Defaults to ``'auto'``.
        debian_dir (str): Where the Debian package keeps its ``.gz`` files.
            Defaults to ``/usr/share/datasets/fashion-mnist``.

    Returns:
        str: The absolute path of the data root.

    Raises:
        ValueError: If ``source`` is not one of the allowed values.
        PrepareError: If no allowed source could provide the files.
    """
    if source not in SOURCES:
        raise ValueError(
            f'source must be one of {SOURCES}, but got {source!r}')
    out_dir = osp.abspath(out_dir)
    if not find_problems(out_dir):
        return out_dir
    os.makedirs(out_dir, exist_ok=True)

    use_debian = source == 'debian' or (
        source == 'auto' and debian_files_present(debian_dir))
    failure = ''
    if use_debian:
        if not debian_files_present(debian_dir):
            failure = f'the Debian files are not in {debian_dir}'
        else:
            _prepare_from_debian(out_dir, debian_dir)
    else:
        try:
            _prepare_by_download(out_dir)
        except Exception as e:  # any network or checksum failure
            failure = f'the download failed ({type(e).__name__}: {e})'

    problems = find_problems(out_dir)
    if problems and not failure:
        failure = 'the files are incomplete: ' + '; '.join(problems)
    if failure:
        raise PrepareError(
            f'Could not prepare Fashion-MNIST in {out_dir}: {failure}.\n'
            'Either install the Debian package (files in '
            f'{debian_dir}):\n'
            f'    apt-get update && apt-get install -y {DEBIAN_PACKAGE}\n'
            'or allow internet access so that mmpretrain can download it:\n'
            f'    python {sys.argv[0] or "prepare_fashion_mnist.py"} '
            '--source download')
    return out_dir


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = argparse.ArgumentParser(
        description='Build the Fashion-MNIST data root read by mmpretrain\'s '
        'FashionMNIST dataset class.')
    parser.add_argument(
        '--out-dir',
        default='data/fashion_mnist',
        help='the data root to fill (default: data/fashion_mnist, the '
        'configs\' data_root)')
    parser.add_argument(
        '--source',
        choices=SOURCES,
        default='auto',
        help='where to take the files from: the Debian package '
        f'{DEBIAN_PACKAGE}, mmpretrain\'s download, or auto (Debian files '
        'where present, else download). Default: auto')
    parser.add_argument(
        '--debian-dir',
        default=DEBIAN_DIR,
        help=f'where the Debian package keeps its files (default: '
        f'{DEBIAN_DIR})')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the tool.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        int: The exit status (0 on success, 1 on failure).
    """
    args = parse_args(argv)
    try:
        root = prepare_fashion_mnist(args.out_dir, args.source,
                                     args.debian_dir)
    except PrepareError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'Fashion-MNIST data root ready: {root}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
