"""Fill the data root of mmpretrain's ``FashionMNIST`` (four uncompressed IDX
files) from the Debian package ``dataset-fashion-mnist`` or a download::

    python tools/dataset_converters/prepare_fashion_mnist.py \\
        --out-dir data/fashion_mnist [--source auto|debian|download]
"""
import argparse
import gzip
import os
import os.path as osp
import shutil
import sys
from typing import List, Optional

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
SOURCES = ('auto', 'debian', 'download')
SPLITS = (('train', 60000), ('t10k', 10000))
# IDX file -> bytes: a 16-byte header, 28 x 28 per image; 8, one per label.
FILES = {f'{split}-images-idx3-ubyte': 16 + n * 28 * 28 for split, n in SPLITS}
FILES.update({f'{split}-labels-idx1-ubyte': 8 + n for split, n in SPLITS})


def find_problems(data_root: str) -> List[str]:
    """The missing or wrong-sized files of a data root, one line each."""
    problems = []
    for name, size in FILES.items():
        path = osp.join(data_root, name)
        found = osp.getsize(path) if osp.isfile(path) else None
        if found != size:
            problems.append(f'{name}: missing' if found is None else
                            f'{name}: size {found} bytes, expected {size}')
    return problems


def debian_files_present(debian_dir: str = DEBIAN_DIR) -> bool:
    """Whether the Debian package's four ``.gz`` files are in a folder."""
    return all(osp.isfile(osp.join(debian_dir, f'{n}.gz')) for n in FILES)


def prepare_fashion_mnist(out_dir: str,
                          source: str = 'auto',
                          debian_dir: str = DEBIAN_DIR) -> str:
    """Make ``out_dir`` a complete data root; a complete one is left alone.

    Args:
        out_dir (str): The data root to fill, created if needed.
        source (str): One of :data:`SOURCES`. Defaults to ``'auto'``: the
            Debian files where present, else the download.
        debian_dir (str): The ``.gz`` files' folder (:data:`DEBIAN_DIR`).

    Returns:
        str: Its absolute path (RuntimeError where no source has the files).
    """
    if source not in SOURCES:
        raise ValueError(f'source must be one of {SOURCES}, got {source!r}')
    if not find_problems(out_dir := osp.abspath(out_dir)):
        return out_dir
    os.makedirs(out_dir, exist_ok=True)
    debian = source != 'download' and debian_files_present(debian_dir)
    download = not debian and source != 'debian'
    try:
        if download:  # mmpretrain checks upstream's md5 and extracts
            from mmpretrain.datasets import FashionMNIST
            FashionMNIST(data_root=out_dir, split='train', download=True)
        else:  # recompressed: the md5 of upstream's .gz would not match
            from mmbake.utils import write_atomically
            for name in FILES:
                with gzip.open(osp.join(debian_dir, f'{name}.gz')) as src:
                    write_atomically(lambda f: shutil.copyfileobj(src, f),
                                     osp.join(out_dir, name))
    except Exception as err:  # noqa: B902 (network, checksum, files, ...)
        way = 'the download' if download else f'reading {debian_dir}'
        problems = [f'{way} failed ({type(err).__name__}: {err})']
    else:
        problems = find_problems(out_dir)
    if problems:
        raise RuntimeError(
            f'Could not prepare Fashion-MNIST in {out_dir}: '
            f'{"; ".join(problems)}. Run '
            '"apt-get update && apt-get install -y dataset-fashion-mnist" '
            'or allow internet access and use --source download')
    return out_dir


def main(argv: Optional[List[str]] = None) -> None:
    """Run the tool (exit status 1 when the files cannot be had)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out-dir', default='data/fashion_mnist')
    parser.add_argument('--source', choices=SOURCES, default='auto')
    parser.add_argument('--debian-dir', default=DEBIAN_DIR)
    try:
        root = prepare_fashion_mnist(**vars(parser.parse_args(argv)))
    except RuntimeError as err:
        print(f'error: {err}', file=sys.stderr)
        raise SystemExit(1)
    print(f'Fashion-MNIST data root ready: {root}')


if __name__ == '__main__':
    main()
