"""Calibration of classification scores: NLL, ECE and the confidence gap."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS

# The smallest normal float32: a probability that underflowed to zero in the
# head's float32 (or half-precision) softmax counts as this, so one such
# image adds a large but finite -log(p) of about 87.3 instead of infinity.
_MIN_PROB = float(torch.finfo(torch.float32).tiny)


@METRICS.register_module()
class Calibration(BaseMetric):
    r"""Negative log-likelihood, expected calibration error and its sign.

    Both are computed from the class probabilities that mmpretrain's heads
    put in every data sample as ``pred_score`` (a softmax over the classes),
    against the single ground-truth label ``gt_label``. For ``N`` images with
    probabilities :math:`p_i` and labels :math:`y_i`:

    .. math::

        \text{NLL} = -\frac{1}{N} \sum_i \log p_i[y_i]

    For ECE each image has a confidence :math:`c_i = \max_k p_i[k]` (the
    top-1 probability) and is correct when its top-1 class is :math:`y_i`.
    The confidences fall into ``num_bins`` equal-width bins, bin ``b``
    holding :math:`c \in (b / B, (b + 1) / B]` (a confidence of 0 goes to the
    first bin); with :math:`acc_b` and :math:`conf_b` the accuracy and the
    mean confidence of the :math:`n_b` images of bin ``b``:

    .. math::

        \text{ECE} = \sum_b \frac{n_b}{N} \left| acc_b - conf_b \right|

    (Guo et al., *On Calibration of Modern Neural Networks*, ICML 2017, with
    15 bins by default). ECE has no sign; the confidence gap gives it:

    .. math::

        \text{gap} = \frac{1}{N} \sum_i c_i - \text{accuracy}

    positive for a model that is over-confident on average, negative for an
    under-confident one. NLL is reported in nats; ECE and the gap in percent
    (points), like mmpretrain's ``Accuracy``. Each image is reduced to three
    numbers in :meth:`process`, so collecting the results of several
    processes costs little even with many classes; mmengine's
    ``BaseMetric`` gathers them across ranks and drops the samples a
    distributed sampler padded.

    Args:
        num_bins (int): Number of equal-width confidence bins of the ECE.
            Defaults to 15.
        collect_device (str): Device used to collect results across ranks,
            ``'cpu'`` or ``'gpu'``. Defaults to ``'cpu'``.
        prefix (str, optional): Prefix of the metric names; ``'calibration'``
            (giving ``calibration/nll``, ``calibration/ece`` and
            ``calibration/confidence_gap``) when None. Defaults to None.

    Examples:
        >>> import torch
        >>> from mmbake.evaluation import Calibration
        >>> scores = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
        >>> Calibration.calculate(scores, torch.tensor([0, 1]), num_bins=10)
        {'nll': 0.5108..., 'ece': 35.0..., 'confidence_gap': 25.0...}

        As an extra evaluator of a config, beside ``Accuracy``::

            val_evaluator = [
                dict(type='Accuracy', topk=(1, )),
                dict(type='Calibration', num_bins=15),
            ]
    """
    default_prefix: Optional[str] = 'calibration'

    def __init__(self,
                 num_bins: int = 15,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.num_bins = _check_num_bins(num_bins)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Reduce each data sample to its log-likelihood and confidence.

        Args:
            data_batch: A batch of data from the dataloader (unused).
            data_samples (Sequence[dict]): The model's outputs, each with
                ``pred_score`` (probabilities, shape ``(K, )``) and
                ``gt_label`` (one label).

        Raises:
            ValueError: If a sample has no ``pred_score``, or not exactly one
                ground-truth label.
        """
        for data_sample in data_samples:
            if 'pred_score' not in data_sample:
                raise ValueError(
                    'Calibration needs the class probabilities `pred_score` '
                    'in every data sample, but got a sample with the keys '
                    f'{sorted(data_sample)}')
            score = data_sample['pred_score'].detach().reshape(1, -1)
            label = data_sample['gt_label'].detach().reshape(-1)
            if label.numel() != 1:
                raise ValueError(
                    'Calibration takes one ground-truth label per sample '
                    f'(single-label classification), but got {label.numel()}')
            log_prob, confidence, correct = _per_sample(score, label)
            self.results.append(
                dict(
                    log_prob=float(log_prob[0]),
                    confidence=float(confidence[0]),
                    correct=bool(correct[0])))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Compute the metrics from the per-sample results of all ranks.

        Args:
            results (list[dict]): What :meth:`process` stored, collected.

        Returns:
            dict[str, float]: ``nll`` (nats), ``ece`` and
            ``confidence_gap`` (percent).

        Raises:
            ValueError: If there are no results.
        """
        if not results:
            raise ValueError('Calibration got no data samples to evaluate')
        log_prob = np.array([r['log_prob'] for r in results], np.float64)
        confidence = np.array([r['confidence'] for r in results], np.float64)
        correct = np.array([r['correct'] for r in results], bool)
        return _summarize(log_prob, confidence, correct, self.num_bins)

    @staticmethod
    def calculate(pred_score: Union[torch.Tensor, np.ndarray, Sequence],
                  target: Union[torch.Tensor, np.ndarray, Sequence],
                  num_bins: int = 15) -> Dict[str, float]:
        """Compute the metrics from scores and labels, without a runner.

        Args:
            pred_score (torch.Tensor | np.ndarray | Sequence): Class
                probabilities, shape ``(N, K)``; each row sums to 1.
            target (torch.Tensor | np.ndarray | Sequence): Labels, shape
                ``(N, )``.
            num_bins (int): Number of equal-width confidence bins of the
                ECE. Defaults to 15.

        Returns:
            dict[str, float]: ``nll`` (nats), ``ece`` and
            ``confidence_gap`` (percent).

        Raises:
            ValueError: If the shapes do not match or ``num_bins`` is not a
                positive int.
        """
        num_bins = _check_num_bins(num_bins)
        # Straight to float64: a list of decimals keeps its values.
        score = pred_score if isinstance(pred_score, torch.Tensor) else \
            torch.as_tensor(np.asarray(pred_score, dtype=np.float64))
        label = torch.as_tensor(target)
        if score.ndim != 2 or label.ndim != 1 or \
                score.shape[0] != label.shape[0] or score.shape[0] == 0:
            raise ValueError(
                'pred_score must have shape (N, K) and target shape (N, ) '
                f'with N >= 1, but got {tuple(score.shape)} and '
                f'{tuple(label.shape)}')
        log_prob, confidence, correct = _per_sample(score, label)
        return _summarize(log_prob, confidence, correct, num_bins)


def _check_num_bins(num_bins: int) -> int:
    """Return ``num_bins`` as an int, or raise a ValueError naming it."""
    is_int = isinstance(num_bins, (int, np.integer))
    if not is_int or isinstance(num_bins, bool) or num_bins < 1:
        raise ValueError(f'num_bins must be an int >= 1, but got {num_bins!r}')
    return int(num_bins)


def _per_sample(
        score: torch.Tensor,
        label: torch.Tensor) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-probability of the label, top-1 probability and correctness.

    Args:
        score (torch.Tensor): Probabilities, shape ``(N, K)``.
        label (torch.Tensor): Labels, shape ``(N, )``.

    Returns:
        tuple[np.ndarray, np.ndarray, np.ndarray]: ``log p[y]`` and the
        confidence (float64), and whether the top-1 class is the label.
    """
    # float64: the mean over 10^4-10^5 images of values near 0 or 1 keeps
    # its last digits, and log() of a float32 probability loses none.
    score = score.detach().cpu().to(torch.float64)
    label = label.detach().cpu().to(torch.int64)
    num_classes = score.shape[1]
    if bool(((label < 0) | (label >= num_classes)).any()):
        raise ValueError(f'gt_label must lie in [0, {num_classes}) for '
                         f'{num_classes} scores, but got {label.tolist()}')
    prob_true = score.gather(1, label[:, None])[:, 0]
    log_prob = torch.log(prob_true.clamp(min=_MIN_PROB))
    confidence, top1 = score.max(dim=1)
    return (log_prob.numpy(), confidence.numpy(), (top1 == label).numpy())


def reliability_bins(confidence: np.ndarray,
                     correct: np.ndarray,
                     num_bins: int = 15) -> Dict[str, np.ndarray]:
    """Group images into equal-width confidence bins (see ``Calibration``).

    What a reliability diagram draws: per bin, the mean confidence against
    the accuracy of the images that fell into it.

    Args:
        confidence (np.ndarray): Top-1 probabilities, shape ``(N, )``.
        correct (np.ndarray): Whether each top-1 class is right, ``(N, )``.
        num_bins (int): Number of bins over ``[0, 1]``. Defaults to 15.

    Returns:
        dict[str, np.ndarray]: Per bin, ``count`` (images), ``confidence``
        and ``correct`` (sums over the bin's images; divide by ``count``
        for the means).
    """
    # Upper edges b / B (exact in float64 as written); searchsorted 'left'
    # puts a confidence equal to an edge into the bin that edge closes.
    inner_edges = np.arange(1, num_bins, dtype=np.float64) / num_bins
    bins = np.searchsorted(inner_edges, confidence, side='left')
    return dict(
        count=np.bincount(bins, minlength=num_bins),
        confidence=np.bincount(bins, weights=confidence, minlength=num_bins),
        correct=np.bincount(
            bins, weights=correct.astype(np.float64), minlength=num_bins))


def _summarize(log_prob: np.ndarray, confidence: np.ndarray,
               correct: np.ndarray, num_bins: int) -> Dict[str, float]:
    """NLL (nats), ECE and confidence gap (percent); see the class."""
    num = log_prob.shape[0]
    bins = reliability_bins(confidence, correct, num_bins)
    # sum_b n_b / N * |acc_b - conf_b| = sum_b |correct_b - conf_sum_b| / N
    # (empty bins contribute 0).
    ece = float(np.abs(bins['correct'] - bins['confidence']).sum() / num)
    gap = float(confidence.mean() - correct.mean())
    return {
        'nll': float(-log_prob.mean()),
        'ece': ece * 100.0,
        'confidence_gap': gap * 100.0
    }
