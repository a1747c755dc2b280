"""Convert the BAKE authors' pycls ImageNet checkpoints to mmpretrain.

    python tools/model_converters/pycls_to_mmpretrain.py SRC DST [--keep-bgr]

``SRC``: a checkpoint of the authors' pycls fork (yxgeee/BAKE,
``imagenet/``), e.g. ``model_epoch_0100.pyth``, or a bare ``model_state``,
of a pycls ``AnyNet`` ResNet-50/101/152 or ResNeXt-101/152 (32x4d). Nothing
in it runs (weights-only unpickler, ``yaml.safe_load``). The keys are
renamed for mmpretrain's ``ImageClassifier`` and checked by name and shape
against it; the stem's input channels are reversed from the authors' BGR to
RGB (``--keep-bgr`` keeps BGR). ``DST`` names the release as in
``publish_model.py``. Input it cannot convert is one ``error:`` line, exit
status 2, and nothing written.
"""
import argparse
import hashlib
import os.path as osp
import re
import sys
import warnings
from collections import OrderedDict
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
import yaml

PROG = 'pycls_to_mmpretrain.py'
# What both libraries' ImageNet ResNets share: stage outputs 4 x 64 x 2^i,
# the first stage at stride 1.
STAGE_WIDTHS = (256, 512, 1024, 2048)
STAGE_STRIDES = (1, 2, 2, 2)
BN_EPS = 1e-5
# (type, depth, groups, width_per_group) -> the config to test it with.
CONFIGS = {
    ('ResNet', 50, 1, 64): 'configs/bake/resnet50_authors-pycls_in1k.py',
    ('ResNet', 101, 1, 64): 'configs/bake/resnet101_authors-pycls_in1k.py',
    ('ResNet', 152, 1, 64): 'configs/bake/resnet152_authors-pycls_in1k.py',
    ('ResNeXt', 101, 32, 4):
    'configs/bake/resnext101-32x4d_authors-pycls_in1k.py',
    ('ResNeXt', 152, 32, 4):
    'configs/bake/resnext152-32x4d_authors-pycls_in1k.py',
}
SUPPORTED = ('ResNet-50, ResNet-101, ResNet-152, ResNeXt-101 (32x4d), '
             'ResNeXt-152 (32x4d) as pycls AnyNet (res_stem_in, '
             'res_bottleneck_block)')
_FORMATS = ('supported: a checkpoint of the authors\' pycls (a dict with '
            '"model_state" and "cfg") or a bare pycls state dict')
_FROM_PYCLS = 'the YAML text that pycls writes into its checkpoints'
# mmpretrain's ImageNet statistics in BGR order, for --keep-bgr.
BGR_MEAN = (103.53, 116.28, 123.675)
BGR_STD = (57.375, 57.12, 58.395)

# pycls AnyNet block layer -> mmpretrain's.
_BLOCK_LAYERS = {
    'f.a': 'conv1',
    'f.a_bn': 'bn1',
    'f.b': 'conv2',
    'f.b_bn': 'bn2',
    'f.c': 'conv3',
    'f.c_bn': 'bn3',
    'proj': 'downsample.0',
    'bn': 'downsample.1'
}
_STEM_KEY = re.compile(r'^stem\.(conv|bn)\.(\w+)$')
_BLOCK_KEY = re.compile(r'^s(\d+)\.b(\d+)\.(f\.\w+|proj|bn)\.(\w+)$')
_HEAD_KEY = re.compile(r'^head\.fc\.(weight|bias)$')
STEM_CONV = 'stem.conv.weight'


class ConversionError(ValueError):
    """The input is not something this tool converts; says what and why."""


class Architecture(NamedTuple):
    """An mmpretrain ResNet / ResNeXt classifier (``groups`` 1 for ResNet)."""
    type: str
    depth: int
    groups: int
    width_per_group: int
    num_classes: int

    @property
    def name(self) -> str:
        """E.g. ``'ResNet-50'`` or ``'ResNeXt-101 (32x4d)'``."""
        if self.type == 'ResNet':
            return f'ResNet-{self.depth}'
        return f'ResNeXt-{self.depth} ({self.groups}x{self.width_per_group}d)'

    def model_cfg(self) -> Dict[str, Any]:
        """The mmpretrain model config of this architecture."""
        backbone = dict(
            type=self.type,
            depth=self.depth,
            num_stages=4,
            out_indices=(3, ),
            style='pytorch')
        if self.type == 'ResNeXt':
            backbone.update(
                groups=self.groups, width_per_group=self.width_per_group)
        return dict(
            type='ImageClassifier',
            backbone=backbone,
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=self.num_classes,
                in_channels=STAGE_WIDTHS[-1]))


def _load_pycls_checkpoint(
        path: str) -> Tuple[Dict[str, torch.Tensor], Optional[str], Any]:
    """``(state dict, cfg text or None, epoch or None)``, no code run."""
    from mmbake.utils import load_checkpoint_weights_only

    with open(path, 'rb') as f:
        head = f.read(4)
    # torch.save writes a zip archive, or (legacy format) a pickle.
    if head != b'PK\x03\x04' and head[:1] != b'\x80':
        raise ConversionError(
            f'not a torch file (it starts with {head!r}, neither a zip '
            f'archive nor a pickle); {_FORMATS}')
    try:
        checkpoint = load_checkpoint_weights_only(path)
    # A damaged file fails in torch's unpickler with whatever error its
    # bytes provoke.
    except Exception as err:  # noqa: B902
        reason = (str(err).splitlines() or [repr(err)])[0]
        raise ConversionError(
            f'not a pycls checkpoint ({reason}); {_FORMATS}') from err
    state_dict, cfg_text, epoch = checkpoint, None, None
    if 'model_state' in checkpoint:
        state_dict = checkpoint['model_state']
        cfg_text, epoch = checkpoint.get('cfg'), checkpoint.get('epoch')
        if cfg_text is not None and not isinstance(cfg_text, str):
            raise ConversionError(
                f'"cfg" is a {type(cfg_text).__name__}; pycls stores its '
                'config as YAML text (a str)')
    if not (isinstance(state_dict, dict) and state_dict
            and all(isinstance(v, torch.Tensor) for v in state_dict.values())):
        raise ConversionError(
            f'found a dict with keys {sorted(map(str, checkpoint))[:8]} that '
            f'is neither a pycls checkpoint nor a state dict; {_FORMATS}')
    return state_dict, cfg_text, epoch


def _anynet_from_cfg(cfg_text: str) -> Dict[str, Any]:
    """The ``ANYNET`` section of a pycls config (``cfg.dump()``, YAML),
    with ``BN_EPS`` and ``DATASET`` added."""
    try:
        cfg = yaml.safe_load(cfg_text)
    except yaml.YAMLError as err:
        raise ConversionError(
            f'"cfg" is not YAML ({str(err).splitlines()[0]}); supported: '
            f'{_FROM_PYCLS}') from err
    model = cfg.get('MODEL') if isinstance(cfg, dict) else None
    model_type = model.get('TYPE') if isinstance(model, dict) else None
    if model_type != 'anynet':
        raise ConversionError(
            f'found MODEL.TYPE {model_type!r}; supported: \'anynet\' '
            f'({SUPPORTED})')
    anynet = cfg.get('ANYNET')
    wanted = ('STEM_TYPE', 'BLOCK_TYPE', 'DEPTHS', 'STRIDES', 'BOT_MULS',
              'GROUP_WS')
    missing = [
        k for k in wanted if not isinstance(anynet, dict) or k not in anynet
    ]
    if missing:
        raise ConversionError(
            f'"cfg" has no ANYNET.{", ANYNET.".join(missing)}; supported: '
            f'{_FROM_PYCLS}')
    return dict(
        anynet,
        BN_EPS=float((cfg.get('BN') or {}).get('EPS', BN_EPS)),
        DATASET=(cfg.get('TRAIN') or {}).get('DATASET'))


def _anynet_from_state_dict(
        state_dict: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """As :func:`_anynet_from_cfg`, read off the tensors of a state dict.

    Strides leave no trace in the weights: ResNet's (1, 2, 2, 2) and
    pycls's default BN epsilon are assumed.
    """
    stem = state_dict.get(STEM_CONV)
    if stem is None or stem.dim() != 4:
        raise ConversionError(
            f'found no 4-d "{STEM_CONV}" (first keys: '
            f'{list(state_dict)[:4]}); supported: {SUPPORTED}')
    blocks: Dict[int, int] = {}
    for key in state_dict:
        match = re.match(r'^s(\d+)\.b(\d+)\.', key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block)
    stages = sorted(blocks)
    # The 3x3 (f.b) and last 1x1 (f.c) convolutions of a bottleneck block
    # give its widths and groups.
    missing = [
        f's{s}.b1.f.{conv}.weight' for s in stages for conv in 'bc'
        if f's{s}.b1.f.{conv}.weight' not in state_dict
    ]
    if missing:
        raise ConversionError(
            f'found no {missing[0]} (bottleneck blocks have f.a, f.b and '
            f'f.c); supported: {SUPPORTED}')
    widths = [state_dict[f's{s}.b1.f.c.weight'].shape[0] for s in stages]
    inner = [state_dict[f's{s}.b1.f.b.weight'].shape[:2] for s in stages]
    size = stem.shape[-1]
    return dict(
        # pycls's other stems (simple_stem_in, res_stem_cifar) are 3x3.
        STEM_TYPE='res_stem_in' if size == 7 else f'{size}x{size} conv',
        BLOCK_TYPE='res_bottleneck_block',
        DEPTHS=[blocks[s] for s in stages],
        STRIDES=list(STAGE_STRIDES),
        BOT_MULS=[c / w for (c, _), w in zip(inner, widths)],
        GROUP_WS=[per_group for _, per_group in inner],
        BN_EPS=BN_EPS,
        DATASET=None)


def _mmpretrain_architecture(anynet: Dict[str, Any],
                             num_classes: int) -> Architecture:
    """The mmpretrain ResNet / ResNeXt that an AnyNet is, if any.

    Stem, blocks, strides and BN's epsilon are checked here (the last two
    leave no trace in the weights); widths, depths and groups by the
    weights' names and shapes against the mmpretrain model.
    """

    def unsupported(found: str) -> ConversionError:
        return ConversionError(f'found an AnyNet with {found}; supported: '
                               f'{SUPPORTED}')

    if anynet['STEM_TYPE'] != 'res_stem_in':
        raise unsupported(f'stem {anynet["STEM_TYPE"]!r}')
    if anynet['BLOCK_TYPE'] != 'res_bottleneck_block':
        raise unsupported(f'blocks {anynet["BLOCK_TYPE"]!r}')
    if list(anynet['STRIDES']) != list(STAGE_STRIDES):
        raise unsupported(f'strides {anynet["STRIDES"]}')
    if anynet['BN_EPS'] != BN_EPS:
        raise unsupported(f'BN.EPS {anynet["BN_EPS"]} (mmpretrain\'s BN '
                          f'uses {BN_EPS})')
    bms, gws = anynet['BOT_MULS'], anynet['GROUP_WS']
    if len(bms) != 4 or len(gws) != 4 or not gws[0]:
        raise unsupported(f'BOT_MULS {bms} and GROUP_WS {gws}')
    # pycls's first stage has a 3x3 convolution of 256 * bm channels in
    # groups of gw channels (anynet.py, BottleneckTransform).
    groups = int(round(STAGE_WIDTHS[0] * bms[0])) // gws[0]
    arch = Architecture('ResNet' if groups == 1 else 'ResNeXt',
                        3 * sum(anynet['DEPTHS']) + 2, groups, gws[0],
                        num_classes)
    if arch[:4] not in CONFIGS:
        raise ConversionError(f'found {arch.name}; supported: {SUPPORTED}')
    return arch


def _convert_key(key: str) -> str:
    """E.g. ``'s2.b1.f.b_bn.bias'`` -> ``'backbone.layer2.0.bn2.bias'``."""
    match = _STEM_KEY.match(key)
    if match:
        layer = 'conv1' if match.group(1) == 'conv' else 'bn1'
        return f'backbone.{layer}.{match.group(2)}'
    match = _BLOCK_KEY.match(key)
    if match and match.group(3) in _BLOCK_LAYERS:
        stage, block = int(match.group(1)), int(match.group(2))
        return (f'backbone.layer{stage}.{block - 1}.'
                f'{_BLOCK_LAYERS[match.group(3)]}.{match.group(4)}')
    match = _HEAD_KEY.match(key)
    if match:
        return f'head.fc.{match.group(1)}'
    raise ConversionError(
        f'found key {key!r}, which a pycls AnyNet ResNet/ResNeXt does not '
        f'have; supported: {SUPPORTED}')


def _convert_state_dict(state_dict: Dict[str, torch.Tensor],
                        keep_bgr: bool) -> Dict[str, torch.Tensor]:
    """Rename a pycls state dict for mmpretrain, stem channels to RGB."""
    converted = OrderedDict()
    for key, value in state_dict.items():
        if key == STEM_CONV and not keep_bgr:
            # pycls normalises BGR images; with its input channels reversed
            # the first convolution takes the RGB of mmpretrain's ImageNet
            # preprocessor (to_rgb=True).
            value = value.flip(1)
        converted[_convert_key(key)] = value
    return converted


def _check_against_model(state_dict: Dict[str, torch.Tensor],
                         arch: Architecture) -> None:
    """Refuse names or shapes that ``arch`` would not load strictly."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        expected = MODELS.build(arch.model_cfg()).state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [(k, list(state_dict[k].shape), list(expected[k].shape))
              for k in expected
              if k in state_dict and state_dict[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing (first: {missing[0]})')
    if unexpected:
        problems.append(
            f'{len(unexpected)} unexpected (first: {unexpected[0]})')
    if shapes:
        key, found, wanted = shapes[0]
        problems.append(f'{len(shapes)} of another shape (first: {key} '
                        f'{found}, mmpretrain {wanted})')
    if problems:
        raise ConversionError(
            f'the weights do not fit mmpretrain\'s {arch.name}: '
            f'{"; ".join(problems)}')


def convert(src: str,
            dst: str,
            keep_bgr: bool = False) -> Tuple[str, Architecture]:
    """Convert ``src``; write the release named after ``dst``.

    Args:
        src (str): The pycls checkpoint.
        dst (str): Requested release name (date and hash are appended).
        keep_bgr (bool): Keep BGR input channels. Defaults to False.

    Returns:
        tuple[str, Architecture]: The file written and its network.
    """
    import mmpretrain

    from mmbake import __version__ as mmbake_version
    from mmbake.utils import save_release

    state_dict, cfg_text, epoch = _load_pycls_checkpoint(src)
    anynet = (
        _anynet_from_cfg(cfg_text)
        if cfg_text is not None else _anynet_from_state_dict(state_dict))
    fc = state_dict.get('head.fc.weight')
    # A missing or malformed classifier is reported by the model check.
    num_classes = fc.shape[0] if fc is not None and fc.dim() == 2 else 1000
    arch = _mmpretrain_architecture(anynet, num_classes)
    converted = _convert_state_dict(state_dict, keep_bgr)
    _check_against_model(converted, arch)

    digest = hashlib.sha256()
    with open(src, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 24), b''):
            digest.update(chunk)
    meta: Dict[str, Any] = dict(
        converted_from=dict(
            file=osp.basename(src),
            sha256=digest.hexdigest(),
            format='pycls AnyNet (yxgeee/BAKE, imagenet/)',
            epoch=epoch,
            cfg=cfg_text),
        architecture=dict(arch._asdict(), name=arch.name),
        input_channel_order='bgr' if keep_bgr else 'rgb',
        # Named, not embedded as meta['config']: mmengine's runner would
        # execute that text on resume.
        mmpretrain_config=CONFIGS[arch[:4]],
        mmpretrain_version=mmpretrain.__version__,
        mmbake_version=mmbake_version)
    if arch.num_classes == 1000 and anynet['DATASET'] in ('imagenet', None):
        # pycls numbers ImageNet classes by sorted WordNet id, as
        # mmpretrain does.
        from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
        meta['dataset_meta'] = dict(classes=list(IMAGENET_CATEGORIES))
    return save_release(dict(state_dict=converted, meta=meta), dst), arch


def main(argv: Optional[List[str]] = None) -> str:
    """Convert the checkpoint named on the command line; return the path
    of the file written."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Convert a pycls ResNet/ResNeXt checkpoint of the BAKE '
        'authors to an mmpretrain release file')
    parser.add_argument('src', help='pycls checkpoint (model_epoch_0100.pyth)')
    parser.add_argument(
        'dst',
        help='release name, e.g. work_dirs/bake_resnet50_authors-pycls_'
        'in1k.pth (date and hash are appended)')
    parser.add_argument(
        '--keep-bgr',
        action='store_true',
        help='keep the BGR input channel order of pycls (then test with '
        'data_preprocessor.to_rgb=False and BGR mean/std)')
    args = parser.parse_args(argv)
    # mmcv-lite warns on import that it lacks compiled ops, which nothing
    # here uses; stderr stays for this tool's own error line.
    warnings.filterwarnings(
        'ignore', message='Fail to import ``MultiScaleDeformableAttention``')
    try:
        if not osp.isfile(args.src):
            raise ConversionError('no such file')
        path, arch = convert(args.src, args.dst, args.keep_bgr)
    except ConversionError as err:
        print(f'{PROG}: error: {args.src}: {err}', file=sys.stderr)
        raise SystemExit(2)
    config = CONFIGS[arch[:4]]
    print(f'Converted pycls {arch.name} ({arch.num_classes} classes) from '
          f'{args.src}')
    print(f'Wrote {path}')
    options = ''
    if arch.num_classes != 1000:
        options += f' model.head.num_classes={arch.num_classes}'
    if args.keep_bgr:
        options += (' data_preprocessor.to_rgb=False '
                    f'data_preprocessor.mean="{list(BGR_MEAN)}" '
                    f'data_preprocessor.std="{list(BGR_STD)}"')
    print(f'Config: {config}')
    print(f'Test:   python tools/test.py {config} {path}' +
          (f' --cfg-options{options}' if options else ''))
    return path


if __name__ == '__main__':
    main()
