"""Fill the data root that mmpretrain's ``FashionMNIST`` dataset reads.

``FashionMNIST(download=False)`` reads four uncompressed IDX files from
``data_root``. The Debian package ``dataset-fashion-mnist`` ships them
gzipped in ``/usr/share/datasets/fashion-mnist``, recompressed, so that
mmpretrain's download check (md5 of upstream's ``.gz`` files) would refuse
them: they are gunzipped here. ``--source download`` lets mmpretrain
download them instead; ``auto`` (the default) takes the Debian files where
they are present::

    python tools/dataset_converters/prepare_fashion_mnist.py \\
        --out-dir data/fashion_mnist
"""
import argparse
import functools
import gzip
import os
import os.path as osp
import shutil
import sys
from typing import List, Optional

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
DEBIAN_PACKAGE = 'dataset-fashion-mnist'
SOURCES = ('auto', 'debian', 'download')
# IDX file -> items: images have a 16-byte header and 28 x 28 bytes each,
# labels an 8-byte header and one byte each.
FILES = {
    'train-images-idx3-ubyte': 60000,
    'train-labels-idx1-ubyte': 60000,
    't10k-images-idx3-ubyte': 10000,
    't10k-labels-idx1-ubyte': 10000,
}


def find_problems(data_root: str) -> List[str]:
    """List the files of a data root that are missing or of the wrong size.

    Args:
        data_root (str): The folder to check.

    Returns:
        list[str]: One line per bad file; empty when the root is complete.
    """
    problems = []
    for name, items in FILES.items():
        path = osp.join(data_root, name)
        size = 16 + items * 28 * 28 if 'images' in name else 8 + items
        if not osp.isfile(path):
            problems.append(f'{name}: missing')
        elif osp.getsize(path) != size:
            problems.append(f'{name}: size {osp.getsize(path)} bytes, '
                            f'expected {size}')
    return problems


def debian_files_present(debian_dir: str = DEBIAN_DIR) -> bool:
    """Whether the Debian package's four ``.gz`` files are in a folder."""
    return all(
        osp.isfile(osp.join(debian_dir, f'{name}.gz')) for name in FILES)


def prepare_fashion_mnist(out_dir: str,
                          source: str = 'auto',
                          debian_dir: str = DEBIAN_DIR) -> str:
    """Make ``out_dir`` a complete data root; a complete one is left alone.

    Args:
        out_dir (str): The data root to fill, created if needed.
        source (str): ``'debian'``, ``'download'`` or ``'auto'`` (the Debian
            files where present, else the download). Defaults to ``'auto'``.
        debian_dir (str): Where the Debian package keeps its ``.gz`` files.
            Defaults to :data:`DEBIAN_DIR`.

    Returns:
        str: The absolute path of the data root.

    Raises:
        ValueError: If ``source`` is not one of :data:`SOURCES`.
        RuntimeError: If no allowed source could provide the files.
    """
    if source not in SOURCES:
        raise ValueError(
            f'source must be one of {SOURCES}, but got {source!r}')
    out_dir = osp.abspath(out_dir)
    if not find_problems(out_dir):
        return out_dir
    os.makedirs(out_dir, exist_ok=True)
    failure = ''
    if source == 'download' or (source == 'auto'
                                and not debian_files_present(debian_dir)):
        from mmpretrain.datasets import FashionMNIST
        try:
            # Downloads (with upstream's checksums) and extracts the files.
            FashionMNIST(data_root=out_dir, split='train', download=True)
        except Exception as err:  # noqa: B902 (network, checksum, ...)
            failure = f'the download failed ({type(err).__name__}: {err})'
    elif not debian_files_present(debian_dir):
        failure = f'the Debian files are not in {debian_dir}'
    else:
        from mmbake.utils import write_atomically
        for name in FILES:
            with gzip.open(osp.join(debian_dir, f'{name}.gz')) as src:
                write_atomically(
                    functools.partial(shutil.copyfileobj, src),
                    osp.join(out_dir, name))
    problems = find_problems(out_dir)
    if problems and not failure:
        failure = 'the files are incomplete: ' + '; '.join(problems)
    if failure:
        raise RuntimeError(
            f'Could not prepare Fashion-MNIST in {out_dir}: {failure}.\n'
            f'Either install the Debian package (files in {debian_dir}):\n'
            f'    apt-get update && apt-get install -y {DEBIAN_PACKAGE}\n'
            'or allow internet access so that mmpretrain can download it:\n'
            f'    python {sys.argv[0] or "prepare_fashion_mnist.py"} '
            '--source download')
    return out_dir


def main(argv: Optional[List[str]] = None) -> int:
    """Run the tool; return its exit status (0, or 1 on failure)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--out-dir', default='data/fashion_mnist', help='%(default)s')
    parser.add_argument(
        '--source',
        choices=SOURCES,
        default='auto',
        help='auto: the Debian files where present, else the download')
    parser.add_argument('--debian-dir', default=DEBIAN_DIR, help=DEBIAN_DIR)
    args = parser.parse_args(argv)
    try:
        root = prepare_fashion_mnist(args.out_dir, args.source,
                                     args.debian_dir)
    except RuntimeError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'Fashion-MNIST data root ready: {root}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
