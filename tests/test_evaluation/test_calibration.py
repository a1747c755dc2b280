"""Calibration metric: values worked out by hand, argument checks and the
collection across two real gloo processes. In a real runner's validation:
tests/test_tools/test_visualize_soft_targets.py."""
import math

import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmpretrain.evaluation import Accuracy
from mmpretrain.registry import METRICS
from mmpretrain.structures import DataSample

from mmbake.evaluation import Calibration, reliability_bins
from tests.dist_utils import run_distributed

# Four images, three classes. Top-1 class, confidence c and p[y]:
#   0: class 0, c 0.70, right, p[y] 0.70
#   1: class 1, c 0.60, right, p[y] 0.60
#   2: class 0, c 0.50, wrong, p[y] 0.25
#   3: class 2, c 0.45, wrong, p[y] 0.35
SCORES = [
    [0.70, 0.20, 0.10],
    [0.30, 0.60, 0.10],
    [0.50, 0.25, 0.25],
    [0.20, 0.35, 0.45],
]
LABELS = [0, 1, 2, 1]
# -(ln 0.7 + ln 0.6 + ln 0.25 + ln 0.35) / 4
# = (0.356675 + 0.510826 + 1.386294 + 1.049822) / 4
NLL = 0.8259043
# ECE in percent for several bin counts (bins are (b/B, (b+1)/B]):
ECE = {
    # One bin: accuracy 2/4, mean confidence 2.25/4: |0.5 - 0.5625|.
    1: 6.25,
    # (0, 0.5]: images 2 and 3 (0.5 sits on the edge and closes the first
    # bin), accuracy 0, mean confidence 0.475; (0.5, 1]: images 0 and 1,
    # accuracy 1, mean confidence 0.65.
    # 2/4 * 0.475 + 2/4 * 0.35 = 0.4125.
    2: 41.25,
    # (2/3, 1]: image 0, |1 - 0.7| = 0.3; (1/3, 2/3]: images 1-3,
    # accuracy 1/3, mean confidence 1.55/3.
    # 1/4 * 0.3 + 3/4 * |1/3 - 1.55/3| = 0.075 + 0.1375 = 0.2125.
    3: 21.25,
    # Every image alone in its bin (0.6 sits on the edge 9/15 and closes
    # (8/15, 9/15]): the mean of |right - c| = (0.3 + 0.4 + 0.5 + 0.45) / 4.
    15: 41.25,
}

# Mean confidence 2.25 / 4 = 0.5625 against accuracy 2 / 4: over-confident
# by 6.25 points, whatever the bins.
GAP = 6.25


def as_samples(scores, labels):
    """Data samples as mmpretrain's heads and data pipeline fill them."""
    return [
        DataSample().set_gt_label(label).set_pred_score(
            torch.tensor(score, dtype=torch.float64))
        for score, label in zip(scores, labels)
    ]


@pytest.mark.parametrize('num_bins', sorted(ECE))
def test_calculate_by_hand(num_bins):
    out = Calibration.calculate(SCORES, LABELS, num_bins=num_bins)
    assert out['nll'] == pytest.approx(
        -(math.log(0.7) + math.log(0.6) + math.log(0.25) + math.log(0.35)) / 4,
        rel=1e-12)
    assert out['nll'] == pytest.approx(NLL, abs=1e-6)
    assert out['ece'] == pytest.approx(ECE[num_bins], abs=1e-9)
    assert out['confidence_gap'] == pytest.approx(GAP, abs=1e-9)
    # Tensors and arrays give the same.
    for scores, labels in ((torch.tensor(SCORES, dtype=torch.float64),
                            torch.tensor(LABELS)), (np.array(SCORES),
                                                    np.array(LABELS))):
        assert Calibration.calculate(scores, labels, num_bins) == out


def test_gap_sign_zero_ece_and_zero_probability():
    # Under-confident: two images, both right, at confidence 0.6 and 0.8.
    under = Calibration.calculate([[0.6, 0.4], [0.2, 0.8]], [0, 1])
    assert under['confidence_gap'] == pytest.approx(-30.0)
    assert under['ece'] == pytest.approx(30.0)
    # Over-confident: the same scores, both wrong.
    over = Calibration.calculate([[0.6, 0.4], [0.2, 0.8]], [1, 0])
    assert over['confidence_gap'] == pytest.approx(70.0)
    # ECE can be large while the signed gap cancels: confidences 0.5
    # (wrong), 0.7 and 0.8 (right), each in a bin of its own; mean
    # confidence 2/3 = accuracy.
    mixed = Calibration.calculate(
        [[0.5, 0.3, 0.2], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], [1, 0, 1],
        num_bins=15)
    assert mixed['confidence_gap'] == pytest.approx(0.0, abs=1e-9)
    assert mixed['ece'] == pytest.approx((0.5 + 0.3 + 0.2) / 3 * 100)
    # Perfectly calibrated: ten images at confidence 0.8, eight right.
    for num_bins in (1, 4, 15):
        out = Calibration.calculate([[0.8, 0.2]] * 10, [0] * 8 + [1] * 2,
                                    num_bins)
        assert out['ece'] == pytest.approx(0.0, abs=1e-9)
        assert out['nll'] == pytest.approx(
            -(8 * math.log(0.8) + 2 * math.log(0.2)) / 10)
    # A probability that underflowed to zero gives a finite NLL:
    # -ln(smallest normal float32) = 126 ln 2.
    out = Calibration.calculate([[1.0, 0.0]], [1], num_bins=15)
    assert out['nll'] == pytest.approx(126 * math.log(2))
    assert out['ece'] == pytest.approx(100.0)


def test_reliability_bins_by_hand():
    # The SCORES with 3 bins: (1/3, 2/3] holds images 1-3 (confidences
    # 0.6, 0.5, 0.45, one right); (2/3, 1] image 0 (0.7, right).
    confidence = np.array([0.7, 0.6, 0.5, 0.45])
    correct = np.array([True, True, False, False])
    bins = reliability_bins(confidence, correct, num_bins=3)
    assert bins['count'].tolist() == [0, 3, 1]
    assert bins['confidence'] == pytest.approx([0.0, 1.55, 0.7])
    assert bins['correct'] == pytest.approx([0.0, 1.0, 1.0])


def test_built_from_config_and_through_mmengine_evaluator():
    assert Calibration().num_bins == 15
    evaluator = Evaluator(metrics=[
        METRICS.build(dict(type='Calibration', num_bins=3)),
        Calibration(num_bins=1, prefix='one_bin'),
        Accuracy(topk=(1, )),
    ])
    samples = as_samples(SCORES, LABELS)
    evaluator.process(samples[:3])
    evaluator.process(samples[3:])
    metrics = evaluator.evaluate(4)
    assert metrics['calibration/nll'] == pytest.approx(NLL, abs=1e-6)
    assert metrics['calibration/ece'] == pytest.approx(ECE[3])
    assert metrics['one_bin/ece'] == pytest.approx(ECE[1])
    assert metrics['accuracy/top1'] == pytest.approx(50.0)
    # Float32 scores bin as stored: float32(0.6) is just above 0.6 and
    # moves to (0.6, 2/3] with 15 bins, where ECE pairs it with nothing
    # else either, so the value holds.
    metric = Calibration(num_bins=15)
    metric.process(None, [
        dict(pred_score=torch.tensor(s), gt_label=torch.tensor([y]))
        for s, y in zip(SCORES, LABELS)
    ])
    metrics = metric.evaluate(4)
    assert metrics['calibration/ece'] == pytest.approx(ECE[15], abs=1e-4)
    assert metrics['calibration/nll'] == pytest.approx(NLL, abs=1e-6)


def test_bad_inputs():
    for num_bins in (0, -3, 2.5, True, '15', None):
        with pytest.raises(ValueError, match='num_bins must be an int >= 1'):
            Calibration(num_bins=num_bins)
        with pytest.raises(ValueError, match='num_bins must be an int >= 1'):
            Calibration.calculate(SCORES, LABELS, num_bins=num_bins)
    metric, label, two = Calibration(), torch.tensor([0]), torch.tensor([0, 1])
    with pytest.raises(ValueError, match='pred_score'):
        metric.process(None, [dict(pred_label=label, gt_label=label)])
    with pytest.raises(ValueError, match='one ground-truth label'):
        metric.process(None, [dict(pred_score=two / 2, gt_label=two)])
    with pytest.raises(ValueError, match=r'gt_label must lie in \[0, 2\)'):
        Calibration.calculate([[0.5, 0.5]], [2])
    with pytest.raises(ValueError, match='shape'):
        Calibration.calculate(SCORES, LABELS[:3])
    with pytest.raises(ValueError, match='shape'):
        Calibration.calculate([0.5, 0.5], [0])
    with pytest.raises(ValueError, match='no data samples'):
        metric.compute_metrics([])


def _evaluate_on_two_ranks(rank: int, world_size: int) -> dict:
    """Each rank processes its DefaultSampler share (rank::world_size)."""
    samples = [s.to_dict() for s in as_samples(SCORES, LABELS)]
    full = Calibration(num_bins=3)
    full.process(None, samples[rank::world_size])
    # Three images on two ranks: the sampler pads rank 1 with image 0,
    # which evaluate(3) must drop.
    padded = Calibration(num_bins=2, prefix='padded')
    share = (samples[:3] + samples[:1])[rank::world_size]
    padded.process(None, share)
    out = full.evaluate(4)
    out.update(padded.evaluate(3))
    return out


@pytest.mark.dist
def test_two_processes_match_one():
    results = run_distributed(_evaluate_on_two_ranks, 2, timeout=180)
    three = Calibration.calculate(SCORES[:3], LABELS[:3], num_bins=2)
    # 3 images, 2 bins: (0, 0.5]: image 2, |0 - 0.5|; (0.5, 1]: images 0,
    # 1, |1 - 0.65| each: (0.5 + 0.3 + 0.4) / 3 = 0.4.
    assert three['ece'] == pytest.approx(40.0)
    for out in results:  # BaseMetric broadcasts the result to every rank
        assert out['calibration/nll'] == pytest.approx(NLL, abs=1e-6)
        assert out['calibration/ece'] == pytest.approx(ECE[3])
        assert out['padded/nll'] == pytest.approx(three['nll'])
        assert out['padded/ece'] == pytest.approx(40.0)
