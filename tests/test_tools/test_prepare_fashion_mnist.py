"""tools/dataset_converters/prepare_fashion_mnist.py."""
import os
import os.path as osp
import sys

import pytest

from tests.script_utils import load_script

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO_ROOT, 'tools', 'dataset_converters',
                'prepare_fashion_mnist.py')

tool = load_script(TOOL)
needs_debian_files = pytest.mark.skipif(
    not tool.debian_files_present(),
    reason=f'the Debian package dataset-fashion-mnist is not installed '
    f'({tool.DEBIAN_DIR} is missing)')


@needs_debian_files
def test_builds_a_root_that_mmpretrain_reads(tmp_path, call_tool):
    out_dir = str(tmp_path / 'fashion_mnist')
    result = call_tool([sys.executable, TOOL, '--out-dir', out_dir],
                       timeout=120)
    assert result.returncode == 0, result.stderr
    assert f'data root ready: {out_dir}' in result.stdout
    assert tool.find_problems(out_dir) == []

    from mmpretrain.datasets import FashionMNIST
    test_set = FashionMNIST(
        data_root=out_dir, split='test', test_mode=True, download=False)
    assert len(test_set) == 10000
    # The official test set's first labels (the training set starts 9 0 0).
    labels = [int(test_set.get_data_info(i)['gt_label']) for i in range(5)]
    assert labels == [9, 2, 1, 1, 6]


@needs_debian_files
def test_complete_root_is_left_alone_and_broken_file_rebuilt(tmp_path):
    out_dir = str(tmp_path / 'root')
    tool.prepare_fashion_mnist(out_dir, source='debian')
    labels = osp.join(out_dir, 't10k-labels-idx1-ubyte')
    mtime = os.stat(labels).st_mtime_ns
    tool.prepare_fashion_mnist(out_dir)
    assert os.stat(labels).st_mtime_ns == mtime

    with open(labels, 'r+b') as f:
        f.truncate(100)
    assert tool.find_problems(out_dir) == [
        't10k-labels-idx1-ubyte: size 100 bytes, expected 10008'
    ]
    tool.prepare_fashion_mnist(out_dir, source='debian')
    assert tool.find_problems(out_dir) == []


def test_no_source_is_a_clear_error(tmp_path, call_tool):
    result = call_tool([
        sys.executable, TOOL, '--out-dir',
        str(tmp_path / 'root'), '--source', 'debian', '--debian-dir',
        str(tmp_path / 'no_such_dir')
    ],
                       timeout=60)
    assert result.returncode == 1
    # Both ways out are named.
    assert 'apt-get install -y dataset-fashion-mnist' in result.stderr
    assert '--source download' in result.stderr
    assert 'Traceback' not in result.stderr


def test_bad_source_argument():
    with pytest.raises(ValueError, match="source must be one of"):
        tool.prepare_fashion_mnist('unused', source='ftp')
