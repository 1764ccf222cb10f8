"""Evaluation metrics for the low-label benchmark (numpy only).

Classification
    :func:`top1_accuracy` -- percent of correct top-1 predictions.
    :func:`mean_per_class_accuracy` -- the mean over classes of each class's top-1 accuracy (Aircraft,
    Caltech-101, Flowers, Pets report it; scikit-learn's ``balanced_accuracy_score``).

Multi-label classification (VOC07, COCO)
    :func:`average_precision` -- all-point AP (VOC 2010+ / scikit-learn definition).
    :func:`voc07_11point_ap` -- the 11-point interpolated AP of the VOC 2007 devkit.
    :func:`mean_average_precision` -- per-class AP over a ``[N, C]`` score matrix, with
    VOC "difficult" entries ignored, averaged over the classes that have a positive.

Semantic segmentation (ADE20K, VOC12)
    :func:`confusion_matrix` -- ``[C, C]`` int64 counts (rows = ground truth, columns =
    prediction); accumulate by summing the matrices of all images of an evaluation set.
    :func:`segmentation_scores` -- mIoU / aAcc / mAcc / per-class IoU and accuracy from an
    accumulated confusion matrix, with mmsegmentation's ``IoUMetric`` conventions.

Units: ``average_precision`` and ``voc07_11point_ap`` return a fraction in [0, 1] (like
scikit-learn); every other function returns percentages (0..100), like the papers and
mmsegmentation report them.
"""

from __future__ import annotations

import warnings

import numpy as np

from .datasets import IGNORE_INDEX

__all__ = [
    "top1_accuracy",
    "mean_per_class_accuracy",
    "average_precision",
    "voc07_11point_ap",
    "mean_average_precision",
    "confusion_matrix",
    "segmentation_scores",
]


# --------------------------------------------------------------------------- classification


def top1_accuracy(pred, target) -> float:
    """Top-1 accuracy in percent.

    ``pred`` is either ``[N]`` predicted labels or ``[N, C]`` scores (the arg-max is the
    prediction); ``target`` is ``[N]`` integer labels. Returns ``100 * mean(pred == target)``.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    if pred.ndim != 1 or target.ndim != 1:
        raise ValueError(
            f"top1_accuracy: expected pred [N] or [N, C] and target [N], "
            f"got shapes {pred.shape} and {target.shape}"
        )
    if pred.shape[0] != target.shape[0]:
        raise ValueError(f"top1_accuracy: {pred.shape[0]} predictions for {target.shape[0]} targets")
    if pred.shape[0] == 0:
        raise ValueError("top1_accuracy: empty input")
    return float(100.0 * np.mean(pred == target))


def mean_per_class_accuracy(pred, target) -> float:
    """Mean over the classes present in ``target`` of the percent of their images predicted right (``pred``
    as in :func:`top1_accuracy`). Every class weighs the same, however many test images it has."""
    pred = np.asarray(pred)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    target = np.asarray(target)
    top1_accuracy(pred, target)  # the same shape checks
    classes, inverse = np.unique(target, return_inverse=True)
    correct = np.bincount(inverse, weights=(pred == target).astype(np.float64), minlength=len(classes))
    return float(100.0 * np.mean(correct / np.bincount(inverse, minlength=len(classes))))


# --------------------------------------------------------------------------- average precision


def _check_binary(labels: np.ndarray, what: str) -> None:
    if labels.size and not np.all((labels == 0) | (labels == 1)):
        bad = np.unique(labels[(labels != 0) & (labels != 1)])[:5]
        raise ValueError(f"{what}: labels must be 0 or 1, found values such as {bad.tolist()}")


def _pr_curve(scores, labels, ignore=None):
    """Precision / recall at every distinct score threshold (descending).

    Entries with ``ignore=True`` are dropped. Tied scores form one threshold (one point of
    the curve), so the result does not depend on the order of tied entries -- this is what
    ``sklearn.metrics.precision_recall_curve`` does. Returns ``(precision, recall)`` or
    ``None`` when there is no positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"expected 1-D scores and labels of the same shape, got {scores.shape} and {labels.shape}"
        )
    _check_binary(labels, "average precision")
    if not np.all(np.isfinite(scores)):
        raise ValueError("average precision: scores contain NaN or inf")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != scores.shape:
            raise ValueError(f"ignore has shape {ignore.shape}, scores have {scores.shape}")
        keep = ~ignore
        scores, labels = scores[keep], labels[keep]
    labels = labels.astype(np.float64)
    n_pos = labels.sum()
    if n_pos == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    tp = np.cumsum(labels)
    fp = np.cumsum(1.0 - labels)
    # last index of every group of equal scores = one threshold
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tp, fp = tp[last], fp[last]
    return tp / (tp + fp), tp / n_pos


def average_precision(scores, labels, ignore=None) -> float:
    """All-point average precision (fraction in [0, 1]).

    ``AP = sum_n (R_n - R_{n-1}) * P_n`` over the distinct score thresholds in descending
    order, with ``R_0 = 0`` -- the definition of VOC 2010+ and of
    ``sklearn.metrics.average_precision_score`` (no interpolation; tied scores are one
    threshold, exactly as scikit-learn handles them).

    ``ignore`` (bool, same shape) marks entries that count neither as positive nor as
    negative (VOC "difficult"). Returns NaN when no (non-ignored) positive exists.
    """
    curve = _pr_curve(scores, labels, ignore)
    if curve is None:
        return float("nan")
    precision, recall = curve
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def voc07_11point_ap(scores, labels, ignore=None) -> float:
    """VOC 2007 11-point interpolated average precision (fraction in [0, 1]).

    ``AP = 1/11 * sum_{t in 0, 0.1, ..., 1} max_{R >= t} P(R)`` (0 when no recall reaches
    ``t``), as in the VOC 2007 devkit (``VOCevalcls`` / ``voc_ap(use_07_metric=True)``).
    The precision/recall curve is the same tie-grouped one as :func:`average_precision`
    (with distinct scores this is identical to the devkit; with ties it does not depend on
    the order of tied entries). The thresholds are exactly ``j / 10``: a recall of exactly
    0.3 counts for ``t = 0.3`` (``np.arange(0, 1.1, 0.1)`` in py-faster-rcnn's ``voc_ap``
    yields 0.30000000000000004 and would not). ``ignore`` as in :func:`average_precision`; NaN when no
    positive exists.
    """
    curve = _pr_curve(scores, labels, ignore)
    if curve is None:
        return float("nan")
    precision, recall = curve
    ap = 0.0
    for t in np.linspace(0.0, 1.0, 11):
        reached = recall >= t - 1e-12
        ap += precision[reached].max() if reached.any() else 0.0
    return float(ap / 11.0)


def mean_average_precision(scores, labels, ignore=None, kind: str = "all_point"):
    """Mean average precision over classes, in percent.

    Args:
        scores: ``[N, C]`` real-valued scores.
        labels: ``[N, C]`` in {0, 1}.
        ignore: ``[N, C]`` bool or None; True entries (VOC "difficult": the image's only
            objects of that class are difficult) are neither positive nor negative for that
            class, as in the VOC devkit.
        kind: ``"all_point"`` (:func:`average_precision`) or ``"voc07"``
            (:func:`voc07_11point_ap`).

    Returns:
        ``(map_percent, per_class_percent)`` where ``per_class_percent`` is a float64 ``[C]``
        array. A class with no (non-ignored) positive has an undefined AP: it is NaN in the
        per-class array and excluded from the mean (a ``RuntimeWarning`` names those
        classes). ``map_percent`` is NaN if no class has a positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or labels.shape != scores.shape:
        raise ValueError(
            f"mean_average_precision: expected scores and labels of the same shape [N, C], "
            f"got {scores.shape} and {labels.shape}"
        )
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != scores.shape:
            raise ValueError(f"mean_average_precision: ignore has shape {ignore.shape}, scores {scores.shape}")
    if kind == "all_point":
        fn = average_precision
    elif kind == "voc07":
        fn = voc07_11point_ap
    else:
        raise ValueError(f"mean_average_precision: kind must be 'all_point' or 'voc07', got {kind!r}")
    per_class = np.array(
        [
            fn(scores[:, c], labels[:, c], None if ignore is None else ignore[:, c])
            for c in range(scores.shape[1])
        ],
        dtype=np.float64,
    ) * 100.0
    missing = np.flatnonzero(np.isnan(per_class))
    if missing.size:
        warnings.warn(
            f"mean_average_precision: classes {missing.tolist()} have no positive example; "
            "their AP is NaN and they are excluded from the mean",
            RuntimeWarning,
            stacklevel=2,
        )
    if missing.size == per_class.size:
        return float("nan"), per_class
    return float(np.nanmean(per_class)), per_class


# --------------------------------------------------------------------------- segmentation


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Confusion matrix of one (or a batch of) segmentation map(s).

    ``conf[g, p]`` = number of pixels with ground truth ``g`` predicted as ``p`` (int64,
    ``[num_classes, num_classes]``). Pixels whose target equals ``ignore_index`` are not
    counted (whatever their prediction). The matrix is additive: the matrix of a whole
    evaluation set is the sum of the per-image matrices, and metrics must be computed once
    from that sum (not averaged per image), as mmsegmentation does.

    Raises ``ValueError`` if shapes differ, or if a counted pixel has a target or a
    prediction outside ``[0, num_classes)`` (mmsegmentation would silently drop such
    values; here they indicate a label-conversion bug).
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"confusion_matrix: pred shape {pred.shape} != target shape {target.shape}")
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    target = target.reshape(-1).astype(np.int64)
    pred = pred.reshape(-1).astype(np.int64)
    valid = target != ignore_index
    target, pred = target[valid], pred[valid]
    if target.size:
        if target.min() < 0 or target.max() >= num_classes:
            bad = np.unique(target[(target < 0) | (target >= num_classes)])[:5]
            raise ValueError(
                f"confusion_matrix: target values {bad.tolist()} are outside [0, {num_classes}) "
                f"and are not the ignore index {ignore_index}"
            )
        if pred.min() < 0 or pred.max() >= num_classes:
            bad = np.unique(pred[(pred < 0) | (pred >= num_classes)])[:5]
            raise ValueError(f"confusion_matrix: predicted values {bad.tolist()} are outside [0, {num_classes})")
    conf = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return conf.reshape(num_classes, num_classes).astype(np.int64)


def intersection_union(conf) -> np.ndarray:
    """``[2, C]``: the intersection ``I_c = conf[c, c]`` and union ``U_c = G_c + P_c - I_c`` of every class of a
    confusion matrix (both add up over images, so a set's mIoU is computed from the sums)."""
    conf = np.asarray(conf)
    inter = np.diag(conf)
    return np.stack([inter, conf.sum(axis=1) + conf.sum(axis=0) - inter])


def segmentation_scores(conf) -> dict:
    """Segmentation metrics from an (accumulated) confusion matrix, in percent.

    With ``I_c = conf[c, c]``, ``G_c = sum_p conf[c, p]`` (ground-truth pixels),
    ``P_c = sum_g conf[g, c]`` (predicted pixels) and ``U_c = G_c + P_c - I_c``:

    - ``per_class_iou[c] = 100 * I_c / U_c`` -- NaN when ``U_c == 0`` (class neither in the
      ground truth nor in the prediction). A class predicted but absent from the ground
      truth has IoU 0 and *is* averaged.
    - ``miou`` = nanmean of ``per_class_iou`` (mmsegmentation ``IoUMetric`` "mIoU").
    - ``pixel_accuracy`` = ``100 * sum_c I_c / sum_c G_c`` (mmsegmentation "aAcc").
    - ``per_class_acc[c] = 100 * I_c / G_c`` -- NaN when ``G_c == 0``; ``macc`` = nanmean
      (mmsegmentation "mAcc").

    Unlike mmsegmentation, values are not rounded to 2 decimals. Summary values are NaN
    when every class is NaN / the matrix is empty.
    """
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"segmentation_scores: expected a square confusion matrix, got shape {conf.shape}")
    inter, union = intersection_union(conf)
    gt = conf.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, np.nan) * 100.0
        acc = np.where(gt > 0, inter / gt, np.nan) * 100.0

    def _nanmean(x):
        return float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan")

    total = gt.sum()
    return {
        "miou": _nanmean(iou),
        "pixel_accuracy": float(100.0 * inter.sum() / total) if total > 0 else float("nan"),
        "macc": _nanmean(acc),
        "per_class_iou": iou,
        "per_class_acc": acc,
    }
