"""A wheel carries the model zoo: configs, tools, model index and weights.

The wheel is built (``pip wheel --no-deps --no-build-isolation``) from a
copy of the source tree in a temporary folder, so the repository's own
``mmbake/.mim`` and build folders are left alone. Its contents are checked
against the model index, and an unpacked copy is imported from another
directory, the way a ``pip install .`` user imports it: the zoo must
resolve its configs and the released Fashion-MNIST weights inside the
installed package.
"""
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
BUILD_TIMEOUT_S = 300
IMPORT_TIMEOUT_S = 180
RELEASED = 'bake_resnet18_1xb64_fashion-mnist'


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> str:
    """Path of a wheel built from a copy of the source tree."""
    root = tmp_path_factory.mktemp('wheel')
    source = root / 'source'
    source.mkdir()
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '.mim',
                                    '*.egg-info')
    for item in SOURCE_ITEMS:
        src = osp.join(REPO, item)
        if osp.isdir(src):
            shutil.copytree(src, source / item, ignore=ignore)
        else:
            shutil.copyfile(src, source / item)
    dist = root / 'dist'
    proc = subprocess.run([
        sys.executable, '-m', 'pip', 'wheel', '--no-deps',
        '--no-build-isolation', '--no-index', '-q', '-w',
        str(dist),
        str(source)
    ],
                          capture_output=True,
                          text=True,
                          timeout=BUILD_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built, ) = os.listdir(dist)
    assert built.startswith('mmbake-') and built.endswith('.whl')
    return str(dist / built)


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
    for model in metafile['Models']:
        # Paths in the index are relative to the index's folder.
        assert mim + model['Config'] in names, model['Name']
        weights = model['Weights']
        if weights and '://' not in weights:
            assert mim + weights in names, model['Name']
    for tool in ('train.py', 'test.py', 'model_converters/publish_model.py',
                 'model_converters/pycls_to_mmpretrain.py'):
        assert mim + 'tools/' + tool in names, tool
    assert 'mmbake/datasets/transforms/pycls_center_crop.py' in names
    assert not any(n.startswith('tests/') for n in names)
    # mim resolves a config by its file name, searching the whole package.
    in_package = Counter(
        osp.basename(n) for n in names
        if n.startswith('mmbake/') and n.endswith('.py'))
    configs = [
        osp.basename(n) for n in names
        if n.startswith(mim + 'configs/') and n.endswith('.py')
    ]
    assert len(configs) > 20
    assert [name for name in configs if in_package[name] > 1] == []


def test_released_weights_resolve_in_an_installed_wheel(
        wheel, metafile, tmp_path):
    """In a fresh interpreter, from the installed wheel: ``import mmbake``
    alone registers the zoo beside mmpretrain's own models, and the
    released weights load through ``get_model``."""
    site = tmp_path / 'site-packages'
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    script = f'''
import json, os.path as osp
import mmbake, mmpretrain, torch
from mmpretrain.apis import ModelHub
from mmbake.model_zoo import find_model_zoo_root
listed = [mmpretrain.list_models('*bake*'),
          mmpretrain.list_models('resnet50_8xb32_in1k')]
info = ModelHub.get({RELEASED!r})  # loads its config file
model = mmpretrain.get_model({RELEASED!r}, pretrained=True)
with torch.no_grad():
    logits = model(torch.zeros(1, 1, 28, 28), mode='tensor')
print(json.dumps(dict(
    listed=listed, package=osp.dirname(mmbake.__file__),
    root=find_model_zoo_root(),
    weights=info.weights, config=info.config.filename,
    weights_exist=osp.isfile(
        osp.join(find_model_zoo_root(), info.weights[len('mmbake://'):])),
    finite=bool(torch.isfinite(logits).all()))))
'''
    env = dict(os.environ, PYTHONPATH=str(site))
    # From another folder, so that the source tree is not importable.
    proc = subprocess.run([sys.executable, '-c', script],
                          cwd=str(tmp_path),
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=IMPORT_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    mim = osp.join(str(site), 'mmbake', '.mim')
    bake, stock = found['listed']
    assert bake == sorted(m['Name'] for m in metafile['Models'])
    assert stock == ['resnet50_8xb32_in1k']
    assert found['package'] == osp.join(str(site), 'mmbake')
    assert found['root'] == mim
    # mmbake:// weights resolve under the wheel's zoo root.
    assert found['weights'].startswith('mmbake://checkpoints/')
    assert found['weights_exist'] and found['finite']
    assert found['config'].startswith(mim)
