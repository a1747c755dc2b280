"""Convert the BAKE authors' pycls ImageNet checkpoints to mmpretrain.

    python tools/model_converters/pycls_to_mmpretrain.py SRC DST [--keep-bgr]

``SRC``: a checkpoint of the authors' pycls fork (yxgeee/BAKE, ``imagenet/``,
e.g. ``model_epoch_0100.pyth``) or a bare ``model_state`` of a pycls AnyNet
ResNet-50/101/152 or ResNeXt-101/152 (32x4d), read without running anything
in it (weights-only unpickler, ``yaml.safe_load``). Keys are renamed for
mmpretrain's ``ImageClassifier`` and checked by name and shape against it;
the stem's input channels go from BGR to RGB (``--keep-bgr`` keeps BGR).
``DST`` names the release as in ``publish_model.py``. Input it cannot convert
is one ``error:`` line, exit status 2, and nothing written.
"""
import argparse
import hashlib
import os.path as osp
import re
import sys
import warnings
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
import yaml

PROG = 'pycls_to_mmpretrain.py'
# What a pycls AnyNet's config must say for an mmpretrain ResNet / ResNeXt
# (the weights show the rest).
PYCLS_CFG = {
    'MODEL.TYPE': 'anynet',
    'ANYNET.STEM_TYPE': 'res_stem_in',
    'ANYNET.BLOCK_TYPE': 'res_bottleneck_block',
    'ANYNET.STRIDES': [1, 2, 2, 2],
    'BN.EPS': 1e-5,  # mmpretrain's BN
}
# (type, depth, groups, width_per_group) -> the config to test it with.
BAKE = 'configs/bake/'
CONFIGS = {
    ('ResNet', 50, 1, 64): BAKE + 'resnet50_authors-pycls_in1k.py',
    ('ResNet', 101, 1, 64): BAKE + 'resnet101_authors-pycls_in1k.py',
    ('ResNet', 152, 1, 64): BAKE + 'resnet152_authors-pycls_in1k.py',
    ('ResNeXt', 101, 32, 4): BAKE + 'resnext101-32x4d_authors-pycls_in1k.py',
    ('ResNeXt', 152, 32, 4): BAKE + 'resnext152-32x4d_authors-pycls_in1k.py',
}
SUPPORTED = ('ResNet-50, ResNet-101, ResNet-152, ResNeXt-101 (32x4d), '
             'ResNeXt-152 (32x4d) as pycls AnyNet (res_stem_in, '
             'res_bottleneck_block)')
FORMATS = ('supported: a checkpoint of the authors\' pycls (a dict with '
           '"model_state" and "cfg") or a bare pycls state dict')
# mmpretrain's ImageNet statistics in BGR order, for --keep-bgr.
BGR_MEAN, BGR_STD = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)
# pycls AnyNet layers -> mmpretrain's, in the stem and in a block.
STEM = {'stem.conv': 'conv1', 'stem.bn': 'bn1'}
BLOCK = dict(
    zip('f.a f.a_bn f.b f.b_bn f.c f.c_bn proj bn'.split(),
        'conv1 bn1 conv2 bn2 conv3 bn3 downsample.0 downsample.1'.split()))
STEM_CONV = 'stem.conv.weight'
BLOCK_KEY = re.compile(r's(\d+)\.b(\d+)\.(.+)')


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
        backbone = dict(type=self.type, depth=self.depth)
        if self.type == 'ResNeXt':
            backbone.update(
                groups=self.groups, width_per_group=self.width_per_group)
        head = dict(type='LinearClsHead', in_channels=2048)
        return dict(
            type='ImageClassifier',
            backbone=backbone,
            neck=dict(type='GlobalAveragePooling'),
            head=dict(head, num_classes=self.num_classes))


def load_pycls(path: str) -> tuple:
    """``(state dict, cfg text or None, epoch or None)``, no code run."""
    from mmbake.utils import load_checkpoint_weights_only
    with open(path, 'rb') as f:
        head = f.read(4)
    # torch.save writes a zip archive, or (legacy format) a pickle.
    if head != b'PK\x03\x04' and head[:1] != b'\x80':
        raise ConversionError(
            f'not a torch file (it starts with {head!r}, neither a zip '
            f'archive nor a pickle); {FORMATS}')
    try:
        checkpoint = load_checkpoint_weights_only(path)
    # A damaged file fails in torch's unpickler with whatever error its
    # bytes provoke.
    except Exception as err:  # noqa: B902
        reason = (str(err).splitlines() or [repr(err)])[0]
        raise ConversionError(
            f'not a pycls checkpoint ({reason}); {FORMATS}') from err
    state, cfg_text, epoch = checkpoint, None, None
    if isinstance(checkpoint, dict) and 'model_state' in checkpoint:
        state = checkpoint['model_state']
        cfg_text, epoch = checkpoint.get('cfg'), checkpoint.get('epoch')
    if not (isinstance(state, dict) and state
            and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ConversionError(
            f'found a dict with keys {sorted(map(str, checkpoint))[:8]} that '
            f'is neither a pycls checkpoint nor a state dict; {FORMATS}')
    return state, cfg_text, epoch


def _unsupported(found: str) -> ConversionError:
    return ConversionError(f'found {found}; supported: {SUPPORTED}')


def check_cfg(cfg_text: str) -> Optional[str]:
    """Check a pycls config (``cfg.dump()``, YAML) for :data:`PYCLS_CFG`.

    Returns:
        str | None: The dataset it was trained on.
    """
    if not isinstance(cfg_text, str):
        raise ConversionError(f'"cfg" is a {type(cfg_text).__name__}; pycls '
                              'stores its config as YAML text (a str)')
    try:
        cfg = yaml.safe_load(cfg_text)
    except yaml.YAMLError as err:
        raise ConversionError(
            f'"cfg" is not YAML ({str(err).splitlines()[0]}); supported: '
            'the YAML text that pycls writes into its checkpoints') from err
    cfg = cfg if isinstance(cfg, dict) else {}
    for key, value in PYCLS_CFG.items():
        section, name = key.split('.')
        found = cfg.get(section)
        found = found.get(name) if isinstance(found, dict) else None
        if found != value:
            raise ConversionError(f'found {key} {found!r}; supported: '
                                  f'{value!r} ({SUPPORTED})')
    return (cfg.get('TRAIN') or {}).get('DATASET')


def architecture(state: Dict[str, torch.Tensor]) -> Architecture:
    """The network of a pycls AnyNet state dict, read off its tensors; the
    weights' names and shapes are then checked against mmpretrain's."""
    if STEM_CONV not in state:
        raise _unsupported(f'no "{STEM_CONV}" (first keys: {list(state)[:4]})')
    blocks = {tuple(k.split('.')[:2]) for k in state if BLOCK_KEY.match(k)}
    fc, conv = (
        state.get(k, torch.empty(0))
        for k in ('head.fc.weight', 's1.b1.f.b.weight'))
    # Missing or malformed weights are reported by the model check.
    num_classes = fc.shape[0] if fc.dim() == 2 else 1000
    # A bottleneck's 3x3 convolution (f.b) takes width / groups channels.
    width, per_group = conv.shape[:2] if conv.dim() == 4 else (64, 64)
    groups = width // max(per_group, 1)
    arch = Architecture('ResNet' if groups == 1 else 'ResNeXt',
                        3 * len(blocks) + 2, groups, per_group, num_classes)
    if arch[:4] not in CONFIGS:
        raise _unsupported(arch.name)
    return arch


def convert_key(key: str) -> str:
    """E.g. ``'s2.b1.f.b_bn.bias'`` -> ``'backbone.layer2.0.bn2.bias'``."""
    layer, _, param = key.rpartition('.')
    block = BLOCK_KEY.fullmatch(layer)
    if layer in STEM:
        return f'backbone.{STEM[layer]}.{param}'
    if block and block[3] in BLOCK:
        return (f'backbone.layer{block[1]}.{int(block[2]) - 1}.'
                f'{BLOCK[block[3]]}.{param}')
    if layer == 'head.fc':
        return key
    raise ConversionError(
        f'found key {key!r}, which a pycls AnyNet ResNet/ResNeXt does not '
        f'have; supported: {SUPPORTED}')


def check_against_model(state: Dict[str, torch.Tensor],
                        arch: Architecture) -> None:
    """Refuse names or shapes that ``arch`` would not load strictly."""
    from mmpretrain.registry import MODELS
    model = MODELS.build(dict(arch.model_cfg(), _scope_='mmpretrain'))
    want = {k: list(v.shape) for k, v in model.state_dict().items()}
    have = {k: list(v.shape) for k, v in state.items()}
    found = {
        'missing': [k for k in want if k not in have],
        'unexpected': [k for k in have if k not in want],
        'of another shape': [
            f'{k} {have[k]}, mmpretrain {v}' for k, v in want.items()
            if have.get(k, v) != v
        ]
    }
    bad = [f'{len(v)} {k} (first: {v[0]})' for k, v in found.items() if v]
    if bad:
        raise ConversionError(
            f'the weights do not fit mmpretrain\'s {arch.name}: '
            f'{"; ".join(bad)}')


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
    state, cfg_text, epoch = load_pycls(src)
    dataset = None if cfg_text is None else check_cfg(cfg_text)
    arch = architecture(state)
    # pycls normalises BGR images; with its input channels reversed the
    # first convolution takes the RGB of mmpretrain's ImageNet preprocessor
    # (to_rgb=True).
    converted = {
        convert_key(k): v.flip(1) if k == STEM_CONV and not keep_bgr else v
        for k, v in state.items()
    }
    check_against_model(converted, arch)
    sha256 = hashlib.sha256()
    with open(src, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 24), b''):
            sha256.update(chunk)
    meta: Dict[str, Any] = dict(
        converted_from=dict(
            file=osp.basename(src),
            sha256=sha256.hexdigest(),
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
    if arch.num_classes == 1000 and dataset in ('imagenet', None):
        # pycls numbers ImageNet classes by sorted WordNet id, as
        # mmpretrain does.
        from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
        meta['dataset_meta'] = dict(classes=list(IMAGENET_CATEGORIES))
    return save_release(dict(state_dict=converted, meta=meta), dst), arch


def main(argv: Optional[List[str]] = None) -> str:
    """Run the tool; return the path of the file written."""
    parser = argparse.ArgumentParser(PROG, description=__doc__.split('\n')[0])
    parser.add_argument('src', help='pycls checkpoint (model_epoch_0100.pyth)')
    parser.add_argument('dst', help='release name (date, hash appended)')
    parser.add_argument('--keep-bgr', action='store_true', help='BGR input')
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
    options = ''
    if arch.num_classes != 1000:
        options += f' model.head.num_classes={arch.num_classes}'
    if args.keep_bgr:
        options += (' data_preprocessor.to_rgb=False '
                    f'data_preprocessor.mean="{list(BGR_MEAN)}" '
                    f'data_preprocessor.std="{list(BGR_STD)}"')
    config = CONFIGS[arch[:4]]
    print(f'Converted pycls {arch.name} ({arch.num_classes} classes) from '
          f'{args.src}\nWrote {path}\nConfig: {config}\nTest:   python '
          f'tools/test.py {config} {path}' +
          (f' --cfg-options{options}' if options else ''))
    return path


if __name__ == '__main__':
    main()
