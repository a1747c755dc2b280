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
ZOO_NAME = 'bake_resnet50_authors-pycls_in1k'
ATOL = 1e-4
# The authors' configs (yxgeee/BAKE, imagenet/configs/): ANYNET sections.
RESNET50 = dict(
    DEPTHS=[3, 4, 6, 3], BOT_MULS=[0.25] * 4, GROUP_WS=[64, 128, 256, 512])
RESNEXT101 = dict(
    DEPTHS=[3, 4, 23, 3], BOT_MULS=[0.5] * 4, GROUP_WS=[4, 8, 16, 32])
# pycls's data loader statistics, BGR order, for images in [0, 1].
PYCLS_MEAN, PYCLS_STD = (0.406, 0.456, 0.485), (0.225, 0.224, 0.229)


def pycls_cfg_text(model_type='anynet', **anynet) -> str:
    """pycls's ``cfg.dump()`` for an ImageNet AnyNet, as in a checkpoint."""
    from pycls.core.config import cfg

    text_cfg = cfg.clone()
    text_cfg.MODEL.TYPE = model_type
    text_cfg.MODEL.NUM_CLASSES = 1000
    text_cfg.TRAIN.DATASET = 'imagenet'
    text_cfg.ANYNET.STEM_TYPE = 'res_stem_in'
    text_cfg.ANYNET.STEM_W = 64
    text_cfg.ANYNET.BLOCK_TYPE = 'res_bottleneck_block'
    text_cfg.ANYNET.WIDTHS = [256, 512, 1024, 2048]
    text_cfg.ANYNET.STRIDES = [1, 2, 2, 2]
    for key, value in anynet.items():
        setattr(text_cfg.ANYNET, key, value)
    return text_cfg.dump()


def pycls_anynet(seed: int, **anynet) -> torch.nn.Module:
    """A pycls AnyNet in eval mode, BN statistics and affines randomised."""
    import yaml
    from pycls.models.anynet import AnyNet

    spec = yaml.safe_load(pycls_cfg_text(**anynet))['ANYNET']
    torch.manual_seed(seed)
    model = AnyNet(
        stem_type=spec['STEM_TYPE'],
        stem_w=spec['STEM_W'],
        block_type=spec['BLOCK_TYPE'],
        ds=spec['DEPTHS'],
        ws=spec['WIDTHS'],
        ss=spec['STRIDES'],
        bms=spec['BOT_MULS'],
        gws=spec['GROUP_WS'],
        se_r=None,
        nc=1000)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.2)
    return model.eval()


def save_authors_checkpoint(model: torch.nn.Module, cfg_text: str,
                            path: str) -> None:
    """Save as pycls's ``save_checkpoint`` does after the last epoch."""
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=0.4,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-5)
    for group in optimizer.param_groups:
        # pycls's cosine schedule computes the rate with numpy.
        group['lr'] = np.float64(0.4) * 0.5 * (1.0 + np.cos(np.pi * 99 / 100))
    torch.save(
        dict(
            epoch=99,
            model_state=model.state_dict(),
            optimizer_state=optimizer.state_dict(),
            cfg=cfg_text), path)


def bgr_image(size: int) -> np.ndarray:
    """A uint8 BGR image (H x W x 3), as OpenCV and mmcv load one."""
    return np.random.default_rng(size).integers(
        0, 256, (size, size, 3), dtype=np.uint8)


@torch.no_grad()
def pycls_logits(model: torch.nn.Module, image: np.ndarray) -> torch.Tensor:
    """pycls's test-time input: [0, 1], BGR statistics, CHW."""
    x = image.astype(np.float32).transpose(2, 0, 1) / 255.0
    for c in range(3):
        x[c] = (x[c] - PYCLS_MEAN[c]) / PYCLS_STD[c]
    return model(torch.from_numpy(x)[None])[0]


@torch.no_grad()
def mmpretrain_logits(model: torch.nn.Module,
                      image: np.ndarray) -> torch.Tensor:
    """mmpretrain's: the uint8 image through the model's preprocessor."""
    inputs = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    data = model.data_preprocessor(dict(inputs=[inputs]), False)
    return model(data['inputs'], mode='tensor')[0]


def preprocessor_cfg(**overrides) -> dict:
    """mmpretrain's stock ImageNet data preprocessor (RGB statistics)."""
    return dict(
        type='ClsDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True,
        **overrides)


def build_mmpretrain(arch, **preprocessor) -> torch.nn.Module:
    """The mmpretrain model of an Architecture, in eval mode."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(
            dict(
                arch.model_cfg(),
                data_preprocessor=dict(preprocessor_cfg(),
                                       **preprocessor))).eval()


def run_tool(*argv: str):
    """Run the tool's ``main``; return (written path, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        path = load_script(TOOL).main(list(argv))
    return path, out.getvalue()


@pytest.fixture(scope='module')
def resnet50(tmp_path_factory):
    folder = tmp_path_factory.mktemp('resnet50')
    model = pycls_anynet(0, **RESNET50)
    src = str(folder / 'model_epoch_0100.pyth')
    save_authors_checkpoint(model, pycls_cfg_text(**RESNET50), src)
    path, stdout = run_tool(src, str(folder / 'out' / f'{ZOO_NAME}.pth'))
    return dict(model=model, src=src, release=path, stdout=stdout)


def test_authors_layout_holds_numpy_scalars(resnet50):
    """The fixture is realistic: its optimizer state pickles numpy scalars,
    which plain ``torch.load(weights_only=True)`` refuses (mmbake's loader,
    which the tool uses, allows them; in this process it already has)."""
    with zipfile.ZipFile(resnet50['src']) as archive:
        (pickled, ) = [
            n for n in archive.namelist() if n.endswith('/data.pkl')
        ]
        data = archive.read(pickled)
    assert re.search(rb'numpy\.(_)?core\.multiarray\nscalar', data)


def test_resnet50_matches_pycls_through_the_model_zoo(resnet50):
    import mmpretrain

    import mmbake  # noqa: F401  (registers the zoo)
    release = torch.load(
        resnet50['release'], map_location='cpu', weights_only=True)
    assert len(release['state_dict']) == 320
    model = mmpretrain.get_model(ZOO_NAME, pretrained=resnet50['release'])
    model.load_state_dict(release['state_dict'], strict=True)
    model.eval()

    image = bgr_image(224)
    theirs = pycls_logits(resnet50['model'], image)
    ours = mmpretrain_logits(model, image)
    assert theirs.abs().max() > 5  # logits of a real spread
    assert (ours - theirs).abs().max() <= ATOL
    assert torch.equal(ours.topk(5).indices, theirs.topk(5).indices)


def test_converted_resnet50_classifies_jpeg_files(resnet50, tmp_path):
    """Through the zoo entry with the converted file: mmpretrain's
    inferencer (which decodes files itself, with OpenCV, to uint8 BGR)
    gives the network input, class and scores of the config's test
    pipeline (the authors' preprocessing), with pycls's centre crop."""
    import cv2
    import mmpretrain
    from mmcv.transforms import Compose
    from mmengine.registry import DefaultScope
    from mmpretrain.apis import ImageClassificationInferencer, ModelHub
    from mmpretrain.registry import TRANSFORMS

    import mmbake  # noqa: F401  (registers the zoo)

    # A smooth colour image whose short side is resized (300 -> 256) and
    # whose crop margin is odd, and its gray version.
    noise = np.random.default_rng(3).integers(0, 256, (38, 52, 3), np.uint8)
    colour = cv2.resize(noise, (414, 300), interpolation=cv2.INTER_CUBIC)
    paths = [str(tmp_path / 'colour.jpg'), str(tmp_path / 'gray.jpg')]
    cv2.imwrite(paths[0], colour)
    cv2.imwrite(paths[1], cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY))

    config = ModelHub.get(ZOO_NAME).config
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pipeline = Compose([
            TRANSFORMS.build(t)
            for t in config.test_dataloader.dataset.pipeline
        ])
    inferencer = ImageClassificationInferencer(
        ZOO_NAME, pretrained=resnet50['release'], device='cpu')
    # The inferencer's own decoding replaces LoadImageFromFile only.
    steps = [type(t).__name__ for t in inferencer.pipeline.transforms]
    assert steps == [
        'PILToNumpy', 'ResizeEdge', 'PyclsCenterCrop', 'PackInputs'
    ]
    expected = {}
    for path in paths:
        packed = pipeline(dict(img_path=path))
        (batch, ) = inferencer.preprocess([path])
        assert torch.equal(batch['inputs'][0], packed['inputs']), path
        with torch.no_grad():
            (sample, ) = inferencer.model.test_step(
                dict(
                    inputs=[packed['inputs']],
                    data_samples=[packed['data_samples']]))
        expected[path] = sample.pred_score.numpy()
        (result, ) = inferencer([path])
        assert result['pred_label'] == expected[path].argmax()
        np.testing.assert_allclose(
            result['pred_scores'], expected[path], rtol=1e-6, atol=0)

    # The one-call form, on the colour file.
    result = mmpretrain.inference_model(
        ZOO_NAME, paths[0], pretrained=resnet50['release'])
    assert result['pred_label'] == expected[paths[0]].argmax()
    np.testing.assert_allclose(
        result['pred_scores'], expected[paths[0]], rtol=1e-6, atol=0)


def test_release_file_and_report(resnet50):
    path, src = resnet50['release'], resnet50['src']
    match = re.fullmatch(
        rf'{re.escape(ZOO_NAME)}_(\d{{8}})-([0-9a-f]{{8}})\.pth',
        osp.basename(path))
    assert match, path
    with open(path, 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest()[:8] == match.group(2)
    assert os.listdir(osp.dirname(path)) == [osp.basename(path)]

    release = torch.load(path, map_location='cpu', weights_only=True)
    assert set(release) == {'state_dict', 'meta'}
    meta = release['meta']
    with open(src, 'rb') as f:
        source_sha = hashlib.sha256(f.read()).hexdigest()
    assert meta['converted_from']['sha256'] == source_sha
    assert meta['converted_from']['file'] == 'model_epoch_0100.pyth'
    assert meta['converted_from']['epoch'] == 99
    assert 'MODEL:' in meta['converted_from']['cfg']
    assert meta['architecture'] == dict(
        type='ResNet',
        depth=50,
        groups=1,
        width_per_group=64,
        num_classes=1000,
        name='ResNet-50')
    assert meta['input_channel_order'] == 'rgb'
    assert len(meta['dataset_meta']['classes']) == 1000
    config = 'configs/bake/resnet50_authors-pycls_in1k.py'
    assert meta['mmpretrain_config'] == config
    assert f'python tools/test.py {config} {path}' in resnet50['stdout']


def test_without_the_channel_flip_logits_differ(resnet50, tmp_path):
    """Negative control, and --keep-bgr with a BGR preprocessor (at 64 px:
    the stem sees every pixel at any size)."""
    tool = load_script(TOOL)
    path, stdout = run_tool(resnet50['src'], str(tmp_path / 'bgr.pth'),
                            '--keep-bgr')
    assert 'data_preprocessor.to_rgb=False' in stdout
    state = torch.load(path, weights_only=True)['state_dict']
    arch = tool.Architecture('ResNet', 50, 1, 64, 1000)
    image = bgr_image(64)
    theirs = pycls_logits(resnet50['model'], image)
    # BGR weights behind the stock RGB preprocessor: what forgetting the
    # flip does.
    rgb = build_mmpretrain(arch)
    rgb.load_state_dict(state, strict=True)
    assert (mmpretrain_logits(rgb, image) - theirs).abs().max() > 0.1
    del rgb

    bgr = build_mmpretrain(
        arch, mean=list(tool.BGR_MEAN), std=list(tool.BGR_STD), to_rgb=False)
    bgr.load_state_dict(state, strict=True)
    assert (mmpretrain_logits(bgr, image) - theirs).abs().max() <= ATOL


def test_bare_state_dict_converts_the_same(resnet50, tmp_path):
    src = str(tmp_path / 'model_state.pth')
    torch.save(resnet50['model'].state_dict(), src)
    path, _ = run_tool(src, str(tmp_path / 'bare.pth'))
    bare = torch.load(path, weights_only=True)
    full = torch.load(resnet50['release'], weights_only=True)
    assert list(bare['state_dict']) == list(full['state_dict'])
    for key, value in full['state_dict'].items():
        assert torch.equal(bare['state_dict'][key], value), key
    assert bare['meta']['converted_from']['cfg'] is None
    assert bare['meta']['architecture'] == full['meta']['architecture']


def test_resnext101_32x4d_matches_pycls(tmp_path):
    tool = load_script(TOOL)
    model = pycls_anynet(1, **RESNEXT101)
    src = str(tmp_path / 'model_epoch_0100.pyth')
    save_authors_checkpoint(model, pycls_cfg_text(**RESNEXT101), src)
    path, stdout = run_tool(src, str(tmp_path / 'x101.pth'))
    assert 'resnext101-32x4d_authors-pycls_in1k.py' in stdout

    release = torch.load(path, weights_only=True)
    assert len(release['state_dict']) == 626
    arch = tool.Architecture('ResNeXt', 101, 32, 4, 1000)
    assert release['meta']['architecture']['name'] == 'ResNeXt-101 (32x4d)'
    converted = build_mmpretrain(arch)
    converted.load_state_dict(release['state_dict'], strict=True)
    # 64 px keeps it fast; every layer is exercised all the same.
    image = bgr_image(64)
    theirs = pycls_logits(model, image)
    ours = mmpretrain_logits(converted, image)
    assert theirs.abs().max() > 1  # not a collapsed output
    assert (ours - theirs).abs().max() <= ATOL
    assert torch.equal(ours.topk(5).indices, theirs.topk(5).indices)


def _cfg_refused(cfg_text: str) -> dict:
    """A checkpoint whose config is refused before any tensor is looked
    at, so a stand-in tensor is enough."""
    return dict(
        epoch=0,
        model_state={'stem.conv.weight': torch.zeros(32, 3, 3, 3)},
        cfg=cfg_text)


def _edited(resnet50, edit):
    """The R-50 checkpoint with its model state edited in place."""
    checkpoint = dict(
        epoch=99,
        model_state=dict(resnet50['model'].state_dict()),
        cfg=pycls_cfg_text(**RESNET50))
    edit(checkpoint)
    return checkpoint


BAD_INPUTS = {
    'not_a_checkpoint':
    (b'just text\n', "not a torch file (it starts with b'just'"),
    'truncated_pickle': (b'\x80\x02\x8a\x0alm', 'not a pycls checkpoint ('),
    'efficientnet': (lambda r: _cfg_refused(pycls_cfg_text('effnet')),
                     "found MODEL.TYPE 'effnet'; supported: 'anynet'"),
    'mobilenet': (lambda r: _cfg_refused(pycls_cfg_text('mobilenetv2')),
                  "found MODEL.TYPE 'mobilenetv2'; supported: 'anynet'"),
    'regnet_stem':
    (lambda r: _cfg_refused(
        pycls_cfg_text(**RESNET50).replace('res_stem_in', 'simple_stem_in')),
     "found an AnyNet with stem 'simple_stem_in'; supported: ResNet-50"),
    'basic_blocks': (lambda r: _cfg_refused(
        pycls_cfg_text(**RESNET50).replace('res_bottleneck_block',
                                           'res_basic_block')),
                     "found an AnyNet with blocks 'res_basic_block'"),
    'resnext50': (lambda r: _cfg_refused(
        pycls_cfg_text(**dict(RESNEXT101, DEPTHS=[3, 4, 6, 3]))),
                  'found ResNeXt-50 (32x4d); supported: ResNet-50'),
    'not_yaml':
    (lambda r: _cfg_refused('MODEL: [unclosed'), '"cfg" is not YAML'),
    'mmengine_checkpoint':
    (lambda r:
     dict(state_dict={'conv1.weight': torch.zeros(1)}, meta=dict(epoch=1)),
     "found a dict with keys ['meta', 'state_dict'] that is neither"),
    'code_in_the_file':
    (lambda r: dict(model_state={}, cfg=os.getcwd, epoch=0), 'getcwd'),
    'bare_basic_blocks': (lambda r: {
        k: v
        for k, v in r['model'].state_dict().items() if '.f.c' not in k
    }, 'found no s1.b1.f.c.weight (bottleneck blocks have'),
    'missing_key':
    (lambda r: _edited(r, lambda c: c['model_state'].pop('s3.b2.f.b_bn.bias')),
     "1 missing (first: backbone.layer3.1.bn2.bias)"),
    'shape_mismatch': (
        lambda r: _edited(
            r, lambda c: c['model_state'].
            update({'s2.b1.f.b.weight': torch.zeros(128, 64, 3, 3)})),
        'of another shape (first: backbone.layer2.0.conv2.weight '
        '[128, 64, 3, 3], mmpretrain [128, 128, 3, 3])'),
    'squeeze_excitation': (lambda r: _edited(
        r, lambda c: c['model_state'].update(
            {'s1.b1.f.se.f_ex.0.weight': torch.zeros(8, 64, 1, 1)})),
                           "found key 's1.b1.f.se.f_ex.0.weight'"),
}


@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_bad_input_is_one_error_line_and_writes_nothing(
        case, resnet50, tmp_path, capsys):
    content, expected = BAD_INPUTS[case]
    src = tmp_path / 'input.pyth'
    if isinstance(content, bytes):
        src.write_bytes(content)
    else:
        torch.save(content(resnet50), str(src))
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_tool(str(src), str(out_dir / 'converted.pth'))
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f'pycls_to_mmpretrain.py: error: {src}: ')
    assert expected in lines[0]
    assert os.listdir(out_dir) == []


def test_missing_file_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_tool(str(tmp_path / 'absent.pyth'), str(tmp_path / 'out.pth'))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith('absent.pyth: no such '
                                                    'file')
    assert os.listdir(tmp_path) == []


def test_command_line_error_is_the_only_line_on_stderr(tmp_path, call_tool):
    """As a user runs it (``main()`` of the command line): exit status 2,
    stderr holds the error alone."""
    src = tmp_path / 'model_epoch_0100.pyth'
    torch.save(_cfg_refused(pycls_cfg_text('effnet')), str(src))
    out_dir = tmp_path / 'out'
    proc = call_tool([
        sys.executable,
        osp.join(REPO_ROOT, TOOL),
        str(src),
        str(out_dir / 'converted.pth')
    ],
                     timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"pycls_to_mmpretrain.py: error: {src}: found MODEL.TYPE 'effnet'; "
        "supported: 'anynet' (ResNet-50, ResNet-101, ResNet-152, "
        'ResNeXt-101 (32x4d), ResNeXt-152 (32x4d) as pycls AnyNet '
        '(res_stem_in, res_bottleneck_block))'
    ]
    assert not out_dir.exists()
