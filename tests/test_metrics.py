"""Tests for tasks/metrics.py: AP (all-point, VOC07), mAP with difficult entries, mIoU."""

import importlib.util
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from lowshot.tasks.metrics import (
    average_precision,
    confusion_matrix,
    mean_average_precision,
    segmentation_scores,
    top1_accuracy,
    voc07_11point_ap,
)


# --------------------------------------------------------------------------- top-1


def test_top1_accuracy_labels_and_scores():
    assert top1_accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx(75.0)
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert top1_accuracy(scores, [0, 1, 1]) == pytest.approx(200 / 3)
    with pytest.raises(ValueError):
        top1_accuracy([0, 1], [0])


# --------------------------------------------------------------------------- AP


def test_ap_matches_sklearn_on_random_data_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(5, 200))
        labels = rng.integers(0, 2, n)
        if labels.sum() == 0:
            labels[0] = 1
        # coarse scores -> many ties
        scores = rng.integers(0, 1 + int(rng.integers(1, 10)), n).astype(float)
        if trial % 3 == 0:
            scores = rng.normal(size=n)
        assert average_precision(scores, labels) == pytest.approx(
            average_precision_score(labels, scores), abs=1e-12
        )


def test_ap_hand_examples():
    # ranking: + - + -   -> P@1 = 1, P@3 = 2/3 ; AP = 0.5*1 + 0.5*2/3
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.5 + 1 / 3)
    # perfect ranking
    assert average_precision([3, 2, 1], [1, 1, 0]) == pytest.approx(1.0)
    # all tied: one threshold, P = 2/4, R = 1
    assert average_precision([1, 1, 1, 1], [1, 0, 1, 0]) == pytest.approx(0.5)
    # tie between a positive and a negative at the top: (+,-) tied then +
    # threshold 1: P = 1/2, R = 1/2 ; threshold 2: P = 2/3, R = 1
    assert average_precision([5, 5, 4], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # same with the tied pair swapped: order inside a tie does not matter
    assert average_precision([5, 5, 4], [0, 1, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert np.isnan(average_precision([0.1, 0.2], [0, 0]))


def test_voc07_11point_hand_example():
    # ranking + - + - : recall 0.5 at P=1, recall 1 at P=2/3
    # t = 0.0..0.5 (6 points): max P over R >= t = 1 ; t = 0.6..1.0 (5 points): 2/3
    ap = voc07_11point_ap([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    assert ap == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)
    # recall never reaches 1 is impossible here; single positive ranked 2nd -> P = 1/2 everywhere
    assert voc07_11point_ap([0.9, 0.8, 0.1], [0, 1, 0]) == pytest.approx(0.5)
    # interpolation: + - - + + -> points (R=1/3,P=1), (2/3,1/2), (1,3/5) ; max P for R>=t
    # t <= 1/3 (0, .1, .2, .3 -> 4 points): 1 ; t in .4 .. 1.0 (7 points): 3/5
    ap = voc07_11point_ap([5, 4, 3, 2, 1], [1, 0, 0, 1, 1])
    assert ap == pytest.approx((4 * 1.0 + 7 * 0.6) / 11)


def _devkit_voc07_ap(scores, labels):
    """VOC07 devkit-style reference (per-entry cumulative tp/fp; valid for distinct scores)."""
    order = np.argsort(-scores)
    tp = np.cumsum(labels[order] == 1)
    fp = np.cumsum(labels[order] == 0)
    rec, prec = tp / labels.sum(), tp / (tp + fp)
    ap = 0.0
    for j in range(11):
        # exact thresholds j/10 (np.arange(0, 1.1, 0.1) would give 0.30000000000000004 and
        # drop a recall of exactly 0.3 -- a float artefact of py-faster-rcnn's voc_ap)
        ok = rec >= j / 10 - 1e-12
        ap += (prec[ok].max() if np.any(ok) else 0.0) / 11.0
    return ap


def test_voc07_matches_devkit_reference_on_distinct_scores():
    rng = np.random.default_rng(4)
    for _ in range(30):
        n = int(rng.integers(5, 100))
        labels = rng.integers(0, 2, n)
        labels[0] = 1
        scores = rng.permutation(n).astype(float)
        assert voc07_11point_ap(scores, labels) == pytest.approx(_devkit_voc07_ap(scores, labels))


def test_difficult_entries_are_ignored():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([1, 0, 1, 0])
    # the negative ranked 2nd is "difficult": removing it gives a perfect ranking
    ignore = np.array([False, True, False, False])
    assert average_precision(scores, labels, ignore) == pytest.approx(1.0)
    assert average_precision(scores, labels, ignore) == pytest.approx(
        average_precision(scores[~ignore], labels[~ignore])
    )
    # an ignored positive does not count as a positive either
    ignore2 = np.array([True, False, False, False])
    assert average_precision(scores, labels, ignore2) == pytest.approx(0.5)


def test_mean_average_precision_skips_classes_without_positives():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(30, 3))
    labels = rng.integers(0, 2, (30, 3))
    labels[:, 2] = 0
    ignore = np.zeros_like(labels, dtype=bool)
    labels[0, 1] = 1
    ignore[0, 1] = True  # a difficult positive of class 1
    with pytest.warns(RuntimeWarning, match=r"\[2\]"):
        m, per_class = mean_average_precision(scores, labels, ignore)
    assert np.isnan(per_class[2])
    expected = [
        average_precision_score(labels[:, 0], scores[:, 0]),
        average_precision_score(labels[1:, 1], scores[1:, 1]),
    ]
    assert per_class[:2] == pytest.approx(np.array(expected) * 100)
    assert m == pytest.approx(np.mean(expected) * 100)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m07, pc07 = mean_average_precision(scores, labels, ignore, kind="voc07")
    assert pc07[0] == pytest.approx(100 * voc07_11point_ap(scores[:, 0], labels[:, 0]))
    assert m07 == pytest.approx(np.nanmean(pc07))
    with pytest.raises(ValueError, match="kind"):
        mean_average_precision(scores, labels, kind="11pt")
    with pytest.raises(ValueError, match="0 or 1"):
        mean_average_precision(scores, labels * 2 - 1)


# --------------------------------------------------------------------------- segmentation


def test_confusion_matrix_and_miou_by_hand():
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 3]])
    conf = confusion_matrix(pred, target, num_classes=4)
    expected = np.array(
        [
            [1, 1, 0, 0],  # gt 0: one right, one predicted 1
            [0, 2, 0, 0],  # gt 1: both right
            [1, 0, 1, 0],  # gt 2: one right, one predicted 0
            [0, 0, 0, 0],  # class 3 only predicted at ignored pixels -> not counted
        ]
    )
    np.testing.assert_array_equal(conf, expected)
    s = segmentation_scores(conf)
    # IoU: c0 = 1/(2+2-1)=1/3, c1 = 2/(2+3-2)=2/3, c2 = 1/(2+1-1)=1/2, c3: union 0 -> NaN
    np.testing.assert_allclose(s["per_class_iou"][:3], [100 / 3, 200 / 3, 50])
    assert np.isnan(s["per_class_iou"][3])
    assert s["miou"] == pytest.approx((100 / 3 + 200 / 3 + 50) / 3)
    assert s["pixel_accuracy"] == pytest.approx(100 * 4 / 6)
    assert s["macc"] == pytest.approx((50 + 100 + 50) / 3)

    # a class predicted but absent from the ground truth has IoU 0 and is averaged
    conf2 = confusion_matrix(np.array([0, 1]), np.array([0, 0]), num_classes=3)
    s2 = segmentation_scores(conf2)
    np.testing.assert_allclose(s2["per_class_iou"][:2], [50, 0])
    assert s2["miou"] == pytest.approx(25.0)
    assert np.isnan(s2["per_class_acc"][1]) and s2["macc"] == pytest.approx(50.0)


def test_confusion_matrix_rejects_bad_values():
    with pytest.raises(ValueError, match="target values"):
        confusion_matrix(np.zeros(3), np.array([0, 1, 7]), num_classes=3)
    with pytest.raises(ValueError, match="predicted values"):
        confusion_matrix(np.array([0, 5, 1]), np.array([0, 1, 1]), num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), num_classes=3)


def test_accumulation_equals_concatenation_not_average():
    rng = np.random.default_rng(2)
    preds, gts = [], []
    for h, w in [(7, 9), (12, 5), (3, 3), (20, 11)]:
        g = rng.integers(0, 5, (h, w))
        g[rng.random((h, w)) < 0.1] = 255
        preds.append(rng.integers(0, 5, (h, w)))
        gts.append(g)
    total = sum(confusion_matrix(p, g, 5) for p, g in zip(preds, gts))
    concat = confusion_matrix(
        np.concatenate([p.ravel() for p in preds]), np.concatenate([g.ravel() for g in gts]), 5
    )
    np.testing.assert_array_equal(total, concat)
    miou = segmentation_scores(total)["miou"]
    per_image = np.mean([segmentation_scores(confusion_matrix(p, g, 5))["miou"] for p, g in zip(preds, gts)])
    assert miou != pytest.approx(per_image)


def _load_mmseg_iou_metric():
    """mmsegmentation's IoUMetric; skips only when mmsegmentation is not installed. Any other failure (its API
    moved, its mmcv version check) is a failure of this test, never a skip."""
    if importlib.util.find_spec("mmseg") is None:
        pytest.skip("mmsegmentation is not installed; install 'mmcv-lite==2.1.0 mmengine mmsegmentation ftfy regex'")
    from mmseg.evaluation import IoUMetric

    return IoUMetric


def test_miou_matches_mmseg_iou_metric():
    IoUMetric = _load_mmseg_iou_metric()
    import logging

    import torch

    rng = np.random.default_rng(3)
    num_classes = 6
    metric = IoUMetric()
    metric.dataset_meta = dict(classes=[f"c{i}" for i in range(num_classes)])
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for _ in range(5):
        h, w = (int(x) for x in rng.integers(8, 40, 2))
        # class 5 never appears in the ground truth; class 4 never appears anywhere
        g = rng.integers(0, 4, (h, w))
        g[rng.random((h, w)) < 0.15] = 255
        p = rng.choice([0, 1, 2, 3, 5], size=(h, w))
        metric.process({}, [dict(pred_sem_seg=dict(data=torch.from_numpy(p)), gt_sem_seg=dict(data=torch.from_numpy(g)))])
        conf += confusion_matrix(p, g, num_classes)
    logging.getLogger("mmengine").setLevel(logging.ERROR)
    ref = metric.compute_metrics(metric.results)
    ours = segmentation_scores(conf)
    assert np.isnan(ours["per_class_iou"][4]) and ours["per_class_iou"][5] == 0.0
    # mmseg rounds its summary values to 2 decimals
    assert ours["miou"] == pytest.approx(float(ref["mIoU"]), abs=0.006)
    assert ours["pixel_accuracy"] == pytest.approx(float(ref["aAcc"]), abs=0.006)
    assert ours["macc"] == pytest.approx(float(ref["mAcc"]), abs=0.006)
