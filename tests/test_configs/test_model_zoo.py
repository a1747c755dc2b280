"""configs/bake/metafile.yml, model-index.yml and their registration.

After ``import mmbake``, ``mmpretrain.list_models('*bake*')`` lists every
model of the metafile (in a fresh interpreter, from an installed wheel:
``tests/test_packaging.py``) and ``mmpretrain.get_model(name,
pretrained=path)`` builds it and loads the weights.
"""
import glob
import os.path as osp

import pytest
import torch
import yaml

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
METAFILE = osp.join(REPO, 'configs', 'bake', 'metafile.yml')
MODEL_INDEX = osp.join(REPO, 'model-index.yml')
CONFIG_NAMES = sorted(
    osp.basename(p)
    for p in glob.glob(osp.join(REPO, 'configs', 'bake', '*.py')))


@pytest.fixture(scope='module')
def metafile():
    with open(METAFILE, encoding='utf-8') as f:
        return yaml.safe_load(f)


def test_model_index_imports_the_metafile():
    with open(MODEL_INDEX, encoding='utf-8') as f:
        index = yaml.safe_load(f)
    assert index == dict(Import=['configs/bake/metafile.yml'])


def test_collection_has_paper_and_readme(metafile):
    (collection, ) = metafile['Collections']
    assert collection['Name'] == 'BAKE'
    assert collection['Paper']['URL'] == 'https://arxiv.org/abs/2104.13298'
    assert osp.isfile(osp.join(REPO, collection['README']))


def test_every_config_has_one_model_entry(metafile):
    configs = [m['Config'] for m in metafile['Models']]
    assert sorted(configs) == sorted(f'configs/bake/{n}' for n in CONFIG_NAMES)
    for model in metafile['Models']:
        # Paths relative to the index root, so that they resolve both in
        # the repository and in an installed mmbake/.mim.
        assert not osp.isabs(model['Config'])
        assert osp.isfile(osp.join(REPO, model['Config']))
        stem = osp.splitext(osp.basename(model['Config']))[0]
        assert model['Name'] == f'bake_{stem}'


# Top-1, and for a calibrated release its test NLL and ECE before and after.
OUR_METRICS = ('Top 1 Accuracy', 'NLL', 'NLL before calibration', 'ECE',
               'ECE before calibration')


def test_model_entries_have_mmpretrain_fields(metafile):
    for model in metafile['Models']:
        name = model['Name']
        assert model['In Collection'] == 'BAKE', name
        meta = model['Metadata']
        assert isinstance(meta['FLOPs'], int) and meta['FLOPs'] > 0, name
        assert isinstance(meta['Parameters'], int), name
        assert meta['Training Data'] in ('ImageNet-1k', 'CIFAR-100',
                                         'Fashion-MNIST'), name
        # Results belong to weights: ours, or the authors' (converted).
        converted_from = model.get('Converted From') or {}
        if model['Results'] is None:
            continue
        assert model['Weights'] or converted_from.get('Weights'), name
        (result, ) = model['Results']
        assert result['Task'] == 'Image Classification', name
        assert result['Dataset'] == meta['Training Data'], name
        # Numbers that are not ours say whose they are.
        for metric in result['Metrics']:
            if 'reported by the authors' in metric:
                # Their figure for their file: we host no copy of it.
                assert converted_from.get('Weights'), (name, metric)
                assert model['Weights'] is None, name
            else:
                assert metric in OUR_METRICS, (name, metric)
                assert model['Weights'] and not converted_from, name


def test_converted_authors_checkpoints(metafile):
    """The authors' pycls weights: the released ResNet-50 with their figure,
    the other networks of their configs with none (nobody released them)."""
    code = 'https://github.com/yxgeee/BAKE/tree/main/imagenet'
    models = {m['Name']: m for m in metafile['Models']}
    converted = sorted(n for n in models if n.endswith('_authors-pycls_in1k'))
    assert converted == sorted(f'bake_{stem}_authors-pycls_in1k'
                               for stem in ('resnet50', 'resnet101',
                                            'resnet152', 'resnext101-32x4d',
                                            'resnext152-32x4d'))
    for name in converted:
        model = models[name]
        assert model['Converted From']['Code'] == code
        assert model['Metadata']['Epochs'] == 100
        assert model['Metadata']['Batch Size'] == 512
        # Same network as the stock-recipe entry: same size.
        stock = models[name.replace('_authors-pycls_in1k', '_8xb32_imagenet')]
        for key in ('FLOPs', 'Parameters', 'Architecture'):
            assert model['Metadata'][key] == stock['Metadata'][key], name
    resnet50 = models['bake_resnet50_authors-pycls_in1k']
    assert resnet50['Converted From']['Weights'].startswith(
        'https://drive.google.com/file/d/1RJeUxXLHnSc6m3iiaEslVN2hx3Vsbldc')
    assert resnet50['Results'][0]['Metrics'] == {
        'Top 1 Accuracy (reported by the authors)': 78.0
    }
    for name in converted:
        if name != 'bake_resnet50_authors-pycls_in1k':
            assert models[name]['Results'] is None, name
            assert 'Weights' not in models[name]['Converted From'], name


def test_training_configs_carry_no_paper_figures(metafile):
    """The paper's numbers came from the authors' code and recipe: they are
    in README.md, not Results of configs that are not that recipe."""
    for model in metafile['Models']:
        if not model['Name'].endswith(('_imagenet', '_cifar100')):
            continue
        assert model['Results'] is None, model['Name']
        assert model['Weights'] is None, model['Name']


def test_parameters_match_the_built_model(metafile):
    """Spot-check the recorded parameter count of a small and a mid model."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    import mmbake  # noqa: F401
    wanted = ('bake_mobilenet-v2_8xb32_imagenet',
              'bake_resnet18_1xb64_fashion-mnist')
    for model in metafile['Models']:
        if model['Name'] not in wanted:
            continue
        cfg = Config.fromfile(osp.join(REPO, model['Config']))
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            net = MODELS.build(cfg.model)
        count = sum(p.numel() for p in net.parameters())
        assert count == model['Metadata']['Parameters'], model['Name']


def test_registration_is_idempotent_and_public():
    from mmbake.model_zoo import find_model_zoo_root, register_bake_models
    assert find_model_zoo_root() == REPO
    first = register_bake_models()
    assert register_bake_models() == first
    assert 'bake_resnet50_8xb32_imagenet' in first
    # Through mmpretrain's and mmengine's public API only.
    import mmbake
    for path in glob.glob(
            osp.join(osp.dirname(mmbake.__file__), '**', '*.py'),
            recursive=True):
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


def test_get_model_with_pretrained_path(tmp_path):
    import mmpretrain
    from mmpretrain.apis import ModelHub

    from mmbake.model_zoo import register_bake_models
    from mmbake.models import BAKEHead
    register_bake_models()
    name = 'bake_resnet18_1xb64_fashion-mnist'
    assert ModelHub.get(name).config.model.head.type == 'BAKEHead'

    # Weights to load: a differently initialised copy of the model.
    torch.manual_seed(1)
    source = mmpretrain.get_model(name)
    checkpoint = tmp_path / 'weights.pth'
    torch.save(
        dict(
            state_dict=source.state_dict(),
            meta=dict(dataset_meta=dict(classes=[str(i) for i in range(10)]))),
        checkpoint)

    torch.manual_seed(2)
    model = mmpretrain.get_model(name, pretrained=str(checkpoint))
    assert isinstance(model.head, BAKEHead)
    assert not model.training
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert model._dataset_meta['classes'][0] == '0'


def test_released_fashion_mnist_weights_load_through_get_model():
    """The published checkpoint in the repository is what the zoo lists."""
    import os.path as osp

    import mmpretrain
    import torch
    from mmpretrain.apis import ModelHub

    from mmbake.model_zoo import SCHEME
    name = 'bake_resnet18_1xb64_fashion-mnist'
    weights = ModelHub.get(name).weights
    assert weights.startswith(SCHEME)
    path = osp.join(REPO, weights[len(SCHEME):])
    # A release holds only weights and plain metadata.
    assert set(torch.load(path, weights_only=True)) == {'state_dict', 'meta'}
    model = mmpretrain.get_model(name, pretrained=True)
    model.eval()
    with torch.no_grad():
        logits = model(torch.zeros(2, 1, 28, 28), mode='tensor')
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
