"""A wheel, built from a copy of the source tree (the repository's ``.mim``
and build folders untouched), carries the zoo: unpacked and imported from
another folder, as after ``pip install .``, it resolves configs and weights.
"""
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import zipfile
from collections import Counter

import pytest
import yaml

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# What setup.py reads or ships.
SOURCE_ITEMS = ('setup.py', 'README.md', 'model-index.yml', 'mmbake',
                'configs', 'tools', 'checkpoints')
TIMEOUT_S = 300
RELEASED = 'bake_resnet18_1xb64_fashion-mnist'


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> str:
    """Path of a wheel built from a copy of the source tree."""
    root = tmp_path_factory.mktemp('wheel')
    source = root / 'source'
    source.mkdir()
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '.mim', '*.egg*')
    for item in SOURCE_ITEMS:
        src = osp.join(REPO, item)
        if osp.isdir(src):
            shutil.copytree(src, source / item, ignore=ignore)
        else:
            shutil.copyfile(src, source / item)
    dist = root / 'dist'
    command = [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q']
    command += ['--no-build-isolation', '--no-index', '-w', dist, source]
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built, ) = dist.glob('mmbake-*.whl')
    return str(built)


@pytest.fixture(scope='module')
def metafile():
    with open(osp.join(REPO, 'configs', 'bake', 'metafile.yml')) as f:
        return yaml.safe_load(f)


def test_wheel_ships_the_zoo(wheel, metafile):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    mim = 'mmbake/.mim/'
    assert mim + 'model-index.yml' in names
    assert mim + 'configs/bake/metafile.yml' in names
    # Every config (in the index or only in configs/bake/README.md), and
    # the index's weights, at their paths relative to the index's folder.
    for config in glob.glob(osp.join(REPO, 'configs', 'bake', '*.py')):
        assert mim + osp.relpath(config, REPO) in names, config
    for model in metafile['Models']:
        assert mim + model['Weights'][len('mmbake://'):] in names
    for tool in ('train.py', 'test.py', 'model_converters/publish_model.py',
                 'model_converters/pycls_to_mmpretrain.py'):
        assert mim + 'tools/' + tool in names, tool
    assert 'mmbake/datasets/transforms/pycls_center_crop.py' in names
    assert not any(n.startswith('tests/') for n in names)
    # mim resolves a config by its file name, searching the whole package.
    py = [n for n in names if n.startswith('mmbake/') and n.endswith('.py')]
    in_package = Counter(osp.basename(n) for n in py)
    configs = [osp.basename(n) for n in py if n.startswith(mim + 'configs/')]
    assert len(configs) > 20
    assert [name for name in configs if in_package[name] > 1] == []


def test_released_weights_resolve_in_an_installed_wheel(
        wheel, metafile, tmp_path):
    """In a fresh interpreter, from the installed wheel: ``import mmbake``
    registers the zoo beside mmpretrain's models; ``get_model`` loads it."""
    site = tmp_path / 'site-packages'
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    script = f'''
import json, os.path as osp
import mmbake, mmpretrain, torch
from mmpretrain.apis import ModelHub
from mmbake.model_zoo import find_model_zoo_root
listed = [mmpretrain.list_models(p) for p in ('*bake*', 'resnet50_8xb32_in1k')]
info = ModelHub.get({RELEASED!r})  # loads its config file
model = mmpretrain.get_model({RELEASED!r}, pretrained=True)
with torch.no_grad():
    logits = model(torch.zeros(1, 1, 28, 28), mode='tensor')
root = find_model_zoo_root()
print(json.dumps(dict(
    listed=listed, package=osp.dirname(mmbake.__file__), root=root,
    weights=info.weights, config=info.config.filename,
    weights_exist=osp.isfile(osp.join(root, info.weights[len('mmbake://'):])),
    finite=bool(torch.isfinite(logits).all()))))
'''
    # From another folder, so that the source tree is not importable.
    proc = subprocess.run([sys.executable, '-c', script],
                          cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(site)),
                          capture_output=True,
                          text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    mim = osp.join(str(site), 'mmbake', '.mim')
    names = sorted(m['Name'] for m in metafile['Models'])
    assert found['listed'] == [names, ['resnet50_8xb32_in1k']]
    assert found['package'] == osp.join(str(site), 'mmbake')
    assert found['root'] == mim and found['config'].startswith(mim)
    # mmbake:// weights resolve under the wheel's zoo root.
    assert found['weights'].startswith('mmbake://checkpoints/')
    assert found['weights_exist'] and found['finite']
