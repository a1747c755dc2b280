"""How much of BAKE's affinity falls on same-class images, on real batches.

Builds one class-aware batch (anchors plus one same-class mate each) from the
first training images of Fashion-MNIST, runs a trained checkpoint on it, and
prints: the mean cosine similarity of same-class and other-class pairs, the
share of each row of the affinity A (row softmax of the cosines, diagonal
masked) that falls on same-class images, and how the ensembled targets Q
compare with the model's own softened predictions P = softmax(z / T).

    python benchmarks/affinity_stats.py CHECKPOINT \
        [--config configs/bake/resnet18_1xb64_fashion-mnist.py] [--batch 64]
"""
import argparse

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmpretrain.datasets import FashionMNIST
from mmpretrain.registry import MODELS

import mmbake  # noqa: F401
from mmbake.models import knowledge_ensemble


def class_aware_indices(labels: np.ndarray, batch: int,
                        seed: int) -> np.ndarray:
    """Anchors drawn at random, each followed by one mate of its class."""
    rng = np.random.default_rng(seed)
    out = []
    for anchor in rng.choice(len(labels), batch // 2, replace=False):
        mates = np.flatnonzero(labels == labels[anchor])
        out += [anchor, rng.choice(mates[mates != anchor])]
    return np.asarray(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint')
    parser.add_argument(
        '--config', default='configs/bake/resnet18_1xb64_fashion-mnist.py')
    parser.add_argument('--data-root', default='data/fashion_mnist')
    parser.add_argument('--images', type=int, default=10000,
                        help='draw the batch from the first N training images')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu',
                    logger='silent')
    model.eval()
    head = model.head
    dataset = FashionMNIST(data_root=args.data_root, split='train',
                           pipeline=[])
    labels = np.array(
        [dataset.get_data_info(i)['gt_label'] for i in range(args.images)])
    idx = class_aware_indices(labels, args.batch, args.seed)
    images = torch.stack([
        torch.from_numpy(np.asarray(dataset.get_data_info(int(i))['img'],
                                    dtype=np.float32)) for i in idx
    ])[:, None]
    preprocessor = cfg.get('data_preprocessor') or cfg.model.data_preprocessor
    images = (images - preprocessor.mean[0]) / preprocessor.std[0]
    with torch.no_grad():
        feats = model.extract_feat(images)
        pre_logits = head.pre_logits(feats)
        logits = head(feats)

    gt = torch.as_tensor(labels[idx])
    unit = F.normalize(pre_logits, dim=1)
    cosine = unit @ unit.t()
    off_diag = ~torch.eye(len(idx), dtype=torch.bool)
    same = (gt[:, None] == gt[None]) & off_diag
    affinity = torch.softmax(cosine.masked_fill(~off_diag, -1e9), dim=1)
    own = torch.softmax(logits / head.temperature, dim=1)
    targets = knowledge_ensemble(pre_logits, logits, head.omega,
                                 head.temperature)
    rows = torch.arange(len(idx))
    print(f'batch of {len(idx)} ({len(idx) // 2} anchors + mates), '
          f'omega {head.omega}, T {head.temperature}')
    print(f'cosine: same-class mean {cosine[same].mean():.3f}, '
          f'other-class mean {cosine[off_diag & ~same].mean():.3f}')
    print(f'affinity mass on same-class images per row: '
          f'{(affinity * same).sum(1).mean():.3f} (uniform: '
          f'{(same.sum(1).float() / (len(idx) - 1)).mean():.3f})')
    print(f'mean probability of the true class: own P {own[rows, gt].mean():.3f}, '
          f'ensembled Q {targets[rows, gt].mean():.3f}')
    print(f'top-1 on the batch: own P {(own.argmax(1) == gt).float().mean():.3f}, '
          f'ensembled Q {(targets.argmax(1) == gt).float().mean():.3f}')


if __name__ == '__main__':
    main()
