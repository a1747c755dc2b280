"""tools/dataset_converters/prepare_fashion_mnist.py."""
import os
import os.path as osp
import sys

import pytest

from tests.script_utils import REPO_ROOT, load_script

TOOL = osp.join(REPO_ROOT, 'tools', 'dataset_converters',
                'prepare_fashion_mnist.py')
tool = load_script(TOOL)


@pytest.mark.skipif(
    not tool.debian_files_present(),
    reason='the Debian package dataset-fashion-mnist is not installed '
    f'({tool.DEBIAN_DIR} is missing)')
def test_builds_a_root_that_mmpretrain_reads(tmp_path, call_tool):
    from mmpretrain.datasets import FashionMNIST

    out_dir = str(tmp_path / 'fashion_mnist')
    result = call_tool([sys.executable, TOOL, '--out-dir', out_dir])
    assert result.returncode == 0, result.stderr
    assert f'data root ready: {out_dir}' in result.stdout
    test_set = FashionMNIST(
        data_root=out_dir, split='test', test_mode=True, download=False)
    assert len(test_set) == 10000
    # The official test set's first labels (the training set starts 9 0 0).
    labels = [int(test_set.get_data_info(i)['gt_label']) for i in range(5)]
    assert labels == [9, 2, 1, 1, 6]

    # A complete root is left alone, a broken file rebuilt.
    labels = osp.join(out_dir, 't10k-labels-idx1-ubyte')
    mtime = os.stat(labels).st_mtime_ns
    assert tool.prepare_fashion_mnist(out_dir) == out_dir
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
    ])
    assert result.returncode == 1
    # The folder it read, and both ways out, are named.
    assert f'reading {tmp_path / "no_such_dir"} failed' in result.stderr
    assert 'apt-get install -y dataset-fashion-mnist' in result.stderr
    assert '--source download' in result.stderr
    assert 'Traceback' not in result.stderr
    with pytest.raises(ValueError, match='source must be one of'):
        tool.prepare_fashion_mnist('unused', source='ftp')
