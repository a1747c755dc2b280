"""tools/model_converters/pycls_to_mmpretrain.py on real pycls networks.

pycls 0.1.1's ``AnyNet`` has the key names, order and shapes of the BAKE
authors' fork. Networks with random weights and randomised BN statistics
are saved in the authors' checkpoint layout (numpy learning rates in the
optimizer state, the YAML config), converted with the tool, loaded
strictly with ``torch.load(weights_only=True)`` into mmpretrain, and both
sides classify the same uint8 BGR image, each through its own
preprocessing: pycls's (divide by 255, BGR statistics) and mmpretrain's
stock ``ClsDataPreprocessor`` (RGB statistics, ``to_rgb=True``).
"""
import contextlib
import hashlib
import io
import os
import os.path as osp
import re
import sys
import zipfile

import numpy as np
import pytest
import torch

from tests.script_utils import REPO_ROOT, load_script

TOOL = 'tools/model_converters/pycls_to_mmpretrain.py'
tool = load_script(TOOL)
ZOO_NAME = 'bake_resnet50_authors-pycls_in1k'
ATOL = 1e-4
# The authors' configs (yxgeee/BAKE, imagenet/configs/): ANYNET sections.
COMMON = dict(
    STEM_TYPE='res_stem_in',
    STEM_W=64,
    BLOCK_TYPE='res_bottleneck_block',
    WIDTHS=[256, 512, 1024, 2048],
    STRIDES=[1, 2, 2, 2])
RESNET50 = dict(
    COMMON,
    DEPTHS=[3, 4, 6, 3],
    BOT_MULS=[0.25] * 4,
    GROUP_WS=[64, 128, 256, 512])
RESNEXT101 = dict(
    COMMON, DEPTHS=[3, 4, 23, 3], BOT_MULS=[0.5] * 4, GROUP_WS=[4, 8, 16, 32])
# pycls's data loader statistics, BGR order, for images in [0, 1].
PYCLS_MEAN, PYCLS_STD = (0.406, 0.456, 0.485), (0.225, 0.224, 0.229)


def pycls_cfg_text(anynet: dict, model_type: str = 'anynet') -> str:
    """pycls's ``cfg.dump()`` for an ImageNet AnyNet, as in a checkpoint."""
    from pycls.core.config import cfg

    text_cfg = cfg.clone()
    text_cfg.MODEL.TYPE, text_cfg.MODEL.NUM_CLASSES = model_type, 1000
    text_cfg.TRAIN.DATASET = 'imagenet'
    for key, value in anynet.items():
        setattr(text_cfg.ANYNET, key, value)
    return text_cfg.dump()


def pycls_anynet(seed: int, anynet: dict) -> torch.nn.Module:
    """A pycls AnyNet in eval mode, BN statistics and affines randomised."""
    from pycls.models.anynet import AnyNet

    names = 'STEM_TYPE STEM_W BLOCK_TYPE DEPTHS WIDTHS STRIDES BOT_MULS'
    args = zip('stem_type stem_w block_type ds ws ss bms gws'.split(),
               names.split() + ['GROUP_WS'])
    torch.manual_seed(seed)
    model = AnyNet(se_r=None, nc=1000, **{a: anynet[n] for a, n in args})
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.2)
    return model.eval()


def authors_checkpoint(model: torch.nn.Module, cfg_text: str) -> dict:
    """What pycls's ``save_checkpoint`` saves after the last epoch."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.4, momentum=0.9, weight_decay=5e-5)
    for group in optimizer.param_groups:
        # pycls's cosine schedule computes the rate with numpy.
        group['lr'] = np.float64(0.4) * 0.5 * (1.0 + np.cos(np.pi * 99 / 100))
    return dict(
        epoch=99,
        model_state=model.state_dict(),
        optimizer_state=optimizer.state_dict(),
        cfg=cfg_text)


def bgr_image(size: int) -> np.ndarray:
    """A uint8 BGR image (H x W x 3), as OpenCV and mmcv load one."""
    return np.random.default_rng(size).integers(
        0, 256, (size, size, 3), dtype=np.uint8)


@torch.no_grad()
def pycls_logits(model: torch.nn.Module, image: np.ndarray) -> torch.Tensor:
    """pycls's test-time input: [0, 1], BGR statistics, CHW."""
    x = image.astype(np.float32).transpose(2, 0, 1) / 255.0
    x = (x - np.array(PYCLS_MEAN, np.float32)[:, None, None]) / \
        np.array(PYCLS_STD, np.float32)[:, None, None]
    return model(torch.from_numpy(x)[None])[0]


@torch.no_grad()
def mmpretrain_logits(path: str, image: np.ndarray, **preprocessor):
    """mmpretrain's: the converted file strictly loaded into the model of
    the config it names, the uint8 image through that config's
    preprocessor (RGB statistics, ``to_rgb=True``) or ``preprocessor``."""
    from mmengine.config import Config
    from mmpretrain.apis import get_model

    release = torch.load(path, map_location='cpu', weights_only=True)
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, release['meta']['mmpretrain_config']))
    cfg.data_preprocessor.update(preprocessor)
    model = get_model(cfg).eval()
    model.load_state_dict(release['state_dict'], strict=True)
    inputs = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    data = model.data_preprocessor(dict(inputs=[inputs]), False)
    return model(data['inputs'], mode='tensor')[0]


def assert_matches(model, path: str, size: int, spread: float) -> None:
    """The pycls model and the converted file give the same logits, of a
    real spread (not a collapsed output), and the same top-5."""
    image = bgr_image(size)
    theirs, ours = pycls_logits(model, image), mmpretrain_logits(path, image)
    assert theirs.abs().max() > spread
    assert (ours - theirs).abs().max() <= ATOL
    assert torch.equal(ours.topk(5).indices, theirs.topk(5).indices)


def run_tool(src, dst, *flags):
    """Run the tool's ``main``; return (written path, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        path = tool.main([str(src), str(dst), *flags])
    return path, out.getvalue()


@pytest.fixture(scope='module')
def resnet50(tmp_path_factory):
    folder = tmp_path_factory.mktemp('resnet50')
    model = pycls_anynet(0, RESNET50)
    src = str(folder / 'model_epoch_0100.pyth')
    torch.save(authors_checkpoint(model, pycls_cfg_text(RESNET50)), src)
    path, stdout = run_tool(src, folder / 'out' / f'{ZOO_NAME}.pth')
    return dict(model=model, src=src, release=path, stdout=stdout)


def test_release_file_and_report(resnet50):
    path, src = resnet50['release'], resnet50['src']
    # The fixture is realistic: its optimizer state pickles numpy scalars,
    # which plain torch.load(weights_only=True) refuses (mmbake's loader,
    # which the tool uses, allows them).
    with zipfile.ZipFile(src) as archive:
        (pickled, ) = [n for n in archive.namelist() if n.endswith('data.pkl')]
        assert re.search(rb'numpy\.(_)?core\.multiarray\nscalar',
                         archive.read(pickled))
    match = re.fullmatch(
        rf'{re.escape(ZOO_NAME)}_(\d{{8}})-([0-9a-f]{{8}})\.pth',
        osp.basename(path))
    assert match, path
    with open(path, 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest()[:8] == match.group(2)
    assert os.listdir(osp.dirname(path)) == [osp.basename(path)]

    release = torch.load(path, map_location='cpu', weights_only=True)
    assert set(release) == {'state_dict', 'meta'}
    assert len(release['state_dict']) == 320
    meta, source = release['meta'], release['meta']['converted_from']
    with open(src, 'rb') as f:
        assert source['sha256'] == hashlib.sha256(f.read()).hexdigest()
    assert (source['file'], source['epoch']) == ('model_epoch_0100.pyth', 99)
    assert 'MODEL:' in source['cfg']
    assert meta['architecture'] == dict(
        tool.Architecture('ResNet', 50, 1, 64, 1000)._asdict(),
        name='ResNet-50')
    assert meta['input_channel_order'] == 'rgb'
    assert len(meta['dataset_meta']['classes']) == 1000
    config = 'configs/bake/resnet50_authors-pycls_in1k.py'
    assert meta['mmpretrain_config'] == config
    assert f'python tools/test.py {config} {path}\n' in resnet50['stdout']


def test_resnet50_matches_pycls(resnet50, tmp_path):
    """The RGB file at 224 px; the --keep-bgr file behind a BGR
    preprocessor, and (the negative control: what forgetting the flip
    does) behind the stock RGB one, at 64 px (the stem sees every pixel at
    any size)."""
    assert_matches(resnet50['model'], resnet50['release'], 224, spread=5)

    path, stdout = run_tool(resnet50['src'], tmp_path / 'bgr.pth',
                            '--keep-bgr')
    assert 'data_preprocessor.to_rgb=False' in stdout
    image = bgr_image(64)
    theirs = pycls_logits(resnet50['model'], image)
    assert (mmpretrain_logits(path, image) - theirs).abs().max() > 0.1
    bgr = dict(mean=tool.BGR_MEAN, std=tool.BGR_STD, to_rgb=False)
    assert (mmpretrain_logits(path, image, **bgr) - theirs).abs().max() <= ATOL


def test_converted_resnet50_classifies_jpeg_files(resnet50, tmp_path):
    """Through the config the converted file names: mmpretrain's
    inferencer (which decodes files itself, with OpenCV, to uint8 BGR)
    gives the network input, class and scores of the config's test
    pipeline (the authors' preprocessing), with pycls's centre crop."""
    import cv2
    from mmcv.transforms import Compose
    from mmengine.config import Config
    from mmpretrain.apis import ImageClassificationInferencer
    from mmpretrain.registry import TRANSFORMS

    import mmbake  # noqa: F401  (registers PyclsCenterCrop)

    # A smooth colour image whose short side is resized (300 -> 256) and
    # whose crop margin is odd, and its gray version.
    noise = np.random.default_rng(3).integers(0, 256, (38, 52, 3), np.uint8)
    colour = cv2.resize(noise, (414, 300), interpolation=cv2.INTER_CUBIC)
    paths = [str(tmp_path / 'colour.jpg'), str(tmp_path / 'gray.jpg')]
    cv2.imwrite(paths[0], colour)
    cv2.imwrite(paths[1], cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY))
    config = osp.join(REPO_ROOT, 'configs', 'bake', f'{ZOO_NAME[5:]}.py')
    steps = Config.fromfile(config).test_dataloader.dataset.pipeline
    pipeline = Compose(
        [TRANSFORMS.build(dict(t, _scope_='mmpretrain')) for t in steps])
    release = resnet50['release']
    inferencer = ImageClassificationInferencer(
        config, pretrained=release, device='cpu')
    # The inferencer's own decoding replaces LoadImageFromFile only.
    assert [type(t).__name__ for t in inferencer.pipeline.transforms
            ] == ['PILToNumpy', 'ResizeEdge', 'PyclsCenterCrop', 'PackInputs']
    for path in paths:
        packed = pipeline(dict(img_path=path))
        (batch, ) = inferencer.preprocess([path])
        assert torch.equal(batch['inputs'][0], packed['inputs']), path
        with torch.no_grad():
            packed = dict(
                inputs=[packed['inputs']],
                data_samples=[packed['data_samples']])
            expected = inferencer.model.test_step(packed)[0].pred_score
        (result, ) = inferencer([path])
        assert result['pred_label'] == expected.argmax()
        np.testing.assert_allclose(
            result['pred_scores'], expected.numpy(), rtol=1e-6, atol=0)


def test_bare_state_dict_converts_the_same(resnet50, tmp_path):
    """Read off the tensors alone; a 10-class head is a 10-class model,
    which the printed test command says."""
    state = {
        k: v[:10] if k.startswith('head.') else v
        for k, v in resnet50['model'].state_dict().items()
    }
    torch.save(state, str(tmp_path / 'model_state.pth'))
    path, stdout = run_tool(tmp_path / 'model_state.pth',
                            tmp_path / 'bare.pth')
    assert '--cfg-options model.head.num_classes=10' in stdout
    bare = torch.load(path, weights_only=True)
    full = torch.load(resnet50['release'], weights_only=True)
    assert list(bare['state_dict']) == list(full['state_dict'])
    for key, value in full['state_dict'].items():
        value = value[:10] if key.startswith('head.') else value
        assert torch.equal(bare['state_dict'][key], value), key
    assert bare['meta']['converted_from']['cfg'] is None
    assert bare['meta']['architecture'] == dict(
        full['meta']['architecture'], num_classes=10)
    assert 'dataset_meta' not in bare['meta']  # not ImageNet's classes


def test_resnext101_32x4d_matches_pycls(tmp_path):
    model = pycls_anynet(1, RESNEXT101)
    src = tmp_path / 'model_epoch_0100.pyth'
    torch.save(authors_checkpoint(model, pycls_cfg_text(RESNEXT101)), src)
    path, stdout = run_tool(src, tmp_path / 'x101.pth')
    assert 'resnext101-32x4d_authors-pycls_in1k.py' in stdout
    release = torch.load(path, weights_only=True)
    assert len(release['state_dict']) == 626
    assert release['meta']['architecture']['name'] == 'ResNeXt-101 (32x4d)'
    # 64 px keeps it fast; every layer is exercised all the same.
    assert_matches(model, path, 64, spread=1)


def refused(cfg_text) -> dict:
    """A checkpoint whose config is refused before any tensor is looked
    at, so a stand-in tensor is enough."""
    return dict(model_state={'stem.conv.weight': torch.zeros(1)}, cfg=cfg_text)


def drop(state: dict, *parts: str) -> dict:
    return {k: v for k, v in state.items() if not any(p in k for p in parts)}


# id: (the file: bytes, or a function of the R-50's state dict; the error)
BAD_INPUTS = {
    'absent': (None, 'absent.pyth: no such file'),
    'not_a_checkpoint':
    (b'just text\n', "not a torch file (it starts with b'just'"),
    'truncated_pickle': (b'\x80\x02\x8a\x0alm', 'not a pycls checkpoint ('),
    'mmengine_checkpoint': (lambda s: dict(state_dict=s, meta={}),
                            "found a dict with keys ['meta', 'state_dict'] "
                            'that is neither'),
    'code_in_the_file': (lambda s: dict(model_state=s, cfg=os.getcwd),
                         'getcwd'),
    'efficientnet': (lambda s: refused(pycls_cfg_text(RESNET50, 'effnet')),
                     "found MODEL.TYPE 'effnet'; supported: 'anynet' "
                     '(ResNet-50, ResNet-101, ResNet-152, ResNeXt-101 '
                     '(32x4d), ResNeXt-152 (32x4d) as pycls AnyNet '
                     '(res_stem_in, res_bottleneck_block))'),
    'regnet_stem': (lambda s: refused(
        pycls_cfg_text(RESNET50).replace('res_stem_in', 'simple_stem_in')),
                    "found ANYNET.STEM_TYPE 'simple_stem_in'; supported: "
                    "'res_stem_in' (ResNet-50"),
    'not_yaml': (lambda s: refused('MODEL: [unclosed'), '"cfg" is not YAML'),
    'cfg_not_text': (lambda s: refused(3), '"cfg" is a int; pycls'),
    'no_stem': (lambda s: drop(s, 'stem.'),
                'found no "stem.conv.weight" (first keys: '),
    'resnet44': (lambda s: drop(s, 's3.b5.', 's3.b6.'),
                 'found ResNet-44; supported: ResNet-50'),
    'bare_basic_blocks':
    (lambda s: drop(s, '.f.c'),
     '96 missing (first: backbone.layer1.0.conv3.weight)'),
    'missing_key': (lambda s: drop(s, 's3.b2.f.b_bn.bias'),
                    '1 missing (first: backbone.layer3.1.bn2.bias)'),
    'shape_mismatch':
    (lambda s: dict(s, **{'s2.b1.f.b.weight': torch.zeros(128, 64, 3, 3)}),
     'of another shape (first: backbone.layer2.0.conv2.weight '
     '[128, 64, 3, 3], mmpretrain [128, 128, 3, 3])'),
    'unexpected_key':
    (lambda s: dict(s, **{'head.fc.running_mean': torch.zeros(1000)}),
     '1 unexpected (first: head.fc.running_mean)'),
    'squeeze_excitation':
    (lambda s: dict(s, **{'s1.b1.f.se.f_ex.0.weight': torch.zeros(8, 64)}),
     "found key 's1.b1.f.se.f_ex.0.weight'"),
}


@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_bad_input_is_one_error_line_and_writes_nothing(
        case, resnet50, tmp_path, call_tool):
    """As a user runs it (the script as ``__main__``): exit status 2, the
    error alone on stderr (no warning, e.g. of mmcv-lite's import)."""
    content, expected = BAD_INPUTS[case]
    src = tmp_path / f'{case}.pyth'
    if isinstance(content, bytes):
        src.write_bytes(content)
    elif content is not None:
        torch.save(content(dict(resnet50['model'].state_dict())), str(src))
    out_dir = tmp_path / 'out'
    proc = call_tool([
        sys.executable,
        osp.join(REPO_ROOT, TOOL),
        str(src),
        str(out_dir / 'converted.pth')
    ])
    assert proc.returncode == 2, proc.stderr
    (line, ) = proc.stderr.strip().splitlines()
    assert line.startswith(f'pycls_to_mmpretrain.py: error: {src}: ')
    assert expected in line
    assert not out_dir.exists()
