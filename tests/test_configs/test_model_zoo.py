"""configs/bake/metafile.yml, model-index.yml and their registration: the
index lists only models with weights (configs without are in
``configs/bake/README.md``); after ``import mmbake``, ``list_models('*bake*')``
lists them (from a wheel: ``tests/test_packaging.py``), ``get_model`` loads
their weights."""
import glob
import os.path as osp

import pytest
import torch
import yaml

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODEL_INDEX = osp.join(REPO, 'model-index.yml')
RELEASED = 'bake_resnet18_1xb64_fashion-mnist'
# Top-1, and for a calibrated release its test NLL and ECE before and after.
OUR_METRICS = {'Top 1 Accuracy', 'NLL', 'ECE'}


@pytest.fixture(scope='module')
def metafile():
    with open(osp.join(REPO, 'configs', 'bake', 'metafile.yml')) as f:
        return yaml.safe_load(f)


def test_index_lists_models_with_weights_only(metafile):
    from mmbake.model_zoo import SCHEME
    with open(MODEL_INDEX) as f:
        assert yaml.safe_load(f) == dict(Import=['configs/bake/metafile.yml'])
    (collection, ) = metafile['Collections']
    assert collection['Name'] == 'BAKE'
    assert collection['Paper']['URL'] == 'https://arxiv.org/abs/2104.13298'
    assert osp.isfile(osp.join(REPO, collection['README']))
    assert [m['Name'] for m in metafile['Models']] == [RELEASED]
    for model in metafile['Models']:
        name, meta = model['Name'], model['Metadata']
        # Paths relative to the index root, so that they resolve both in
        # the repository and in an installed mmbake/.mim.
        assert not osp.isabs(model['Config'])
        assert osp.isfile(osp.join(REPO, model['Config']))
        stem = osp.splitext(osp.basename(model['Config']))[0]
        assert name == f'bake_{stem}'
        assert model['In Collection'] == 'BAKE', name
        assert isinstance(meta['FLOPs'], int) and meta['FLOPs'] > 0, name
        assert isinstance(meta['Parameters'], int), name
        # Weights we ship, and results measured on them (no one else's).
        assert model['Weights'].startswith(SCHEME), name
        assert osp.isfile(osp.join(REPO, model['Weights'][len(SCHEME):]))
        (result, ) = model['Results']
        assert result['Task'] == 'Image Classification', name
        assert result['Dataset'] == meta['Training Data'], name
        metrics = {m.split(' before ')[0] for m in result['Metrics']}
        assert metrics <= OUR_METRICS, name


def test_parameters_match_the_built_model(metafile):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    import mmbake  # noqa: F401
    for model in metafile['Models']:
        cfg = Config.fromfile(osp.join(REPO, model['Config']))
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            net = MODELS.build(cfg.model)
        count = sum(p.numel() for p in net.parameters())
        assert count == model['Metadata']['Parameters'], model['Name']


def test_registration_is_idempotent_and_public(metafile):
    import mmpretrain

    import mmbake
    from mmbake.model_zoo import find_model_zoo_root, register_bake_models
    assert find_model_zoo_root() == REPO
    first = register_bake_models()
    assert register_bake_models() == first
    assert first == [m['Name'] for m in metafile['Models']]
    assert mmpretrain.list_models('*bake*') == first
    # Through mmpretrain's and mmengine's public API only.
    package = osp.dirname(mmbake.__file__)
    for path in glob.glob(osp.join(package, '**', '*.py'), recursive=True):
        with open(path) as f:
            assert 'ModelHub._' not in f.read(), path


def test_zoo_root_of_an_installed_wheel(tmp_path):
    """A wheel ships the index in mmbake/.mim; site-packages may hold an
    unrelated model-index.yml one level up, which must not be taken."""
    from mmbake.model_zoo import find_model_zoo_root
    site = tmp_path / 'site-packages'
    package = site / 'mmbake'
    mim = package / '.mim'
    (mim / 'configs' / 'bake').mkdir(parents=True)
    assert find_model_zoo_root(str(package)) is None
    (site / 'model-index.yml').write_text('Import: []\n')
    (mim / 'model-index.yml').write_text(open(MODEL_INDEX).read())
    (mim / 'configs' / 'bake' / 'metafile.yml').write_text('Models: []\n')
    assert find_model_zoo_root(str(package)) == str(mim)


def test_get_model_loads_released_and_given_weights(tmp_path):
    import mmpretrain
    from mmpretrain.apis import ModelHub

    from mmbake.model_zoo import SCHEME, register_bake_models
    from mmbake.models import BAKEHead
    register_bake_models()
    info = ModelHub.get(RELEASED)
    assert info.config.model.head.type == 'BAKEHead'
    # pretrained=True: the published file (only weights and plain metadata)
    # through the mmbake:// scheme.
    release = torch.load(
        osp.join(REPO, info.weights[len(SCHEME):]), weights_only=True)
    assert set(release) == {'state_dict', 'meta'}
    model = mmpretrain.get_model(RELEASED, pretrained=True).eval()
    with torch.no_grad():
        logits = model(torch.zeros(2, 1, 28, 28), mode='tensor')
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()

    # pretrained=PATH: a differently initialised copy of the model.
    torch.manual_seed(1)
    source = mmpretrain.get_model(RELEASED)
    checkpoint = tmp_path / 'weights.pth'
    torch.save(
        dict(
            state_dict=source.state_dict(),
            meta=dict(dataset_meta=dict(classes=[str(i) for i in range(10)]))),
        checkpoint)
    torch.manual_seed(2)
    model = mmpretrain.get_model(RELEASED, pretrained=str(checkpoint))
    assert isinstance(model.head, BAKEHead) and not model.training
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model._dataset_meta['classes'][0] == '0'
