"""The paired evidence of one record: per-image arrays from which its main score (and any resample of the
evaluation images) can be computed again, so that two models scored on the same images can be compared image by
image (`lowshot.benchmark.statistics`).

A family's `score` / `evaluate` returns it under the key "evidence" of its record fields; the runner writes it
beside the record (`lowshot.benchmark.evidence`). Three kinds:

- "single-label" (top-1, mean per-class accuracy): `correct` bool [N], `target` int [N] (the class of each image,
  which mean per-class accuracy needs);
- "multi-label" (mAP): `scores` float16 [N, C] (the classifier's probabilities), `target` bool [N, C],
  `ignore` bool [N, C] (entries that count neither way, e.g. VOC's *difficult* objects);
- "segmentation" (mIoU): `intersection` and `union` int32 [N, C], per image and class, in pixels (they add up
  over images to the confusion matrix's I_c and U_c = G_c + P_c - I_c).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = {"single-label": ("correct", "target"), "multi-label": ("scores", "target", "ignore"),
         "segmentation": ("intersection", "union")}


@dataclass(frozen=True)
class Evidence:
    kind: str  # one of KINDS
    arrays: dict  # name -> np.ndarray, the names of KINDS[kind], one row per evaluation image

    def __post_init__(self):
        if self.kind not in KINDS or set(self.arrays) != set(KINDS[self.kind]):
            raise ValueError(f"evidence of kind {self.kind!r} must hold {KINDS.get(self.kind)}, got {sorted(self.arrays)}")
        rows = {len(a) for a in self.arrays.values()}
        if len(rows) != 1:
            raise ValueError(f"{self.kind} evidence: arrays of different lengths {sorted(rows)}")

    @property
    def num_images(self) -> int:
        return len(next(iter(self.arrays.values())))


def _label_dtype(target: np.ndarray):
    return np.uint16 if target.size == 0 or int(target.max()) < 2**16 else np.int64


def single_label_evidence(pred, target) -> Evidence:
    """Per-image correctness of predicted labels `pred` [N] (or scores [N, C]) against `target` [N]."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.ndim == 2:
        pred = pred.argmax(1)
    return Evidence("single-label", {"correct": pred == target, "target": target.astype(_label_dtype(target))})


def multi_label_evidence(scores, target, ignore) -> Evidence:
    """Per-image scores [N, C] (stored as float16), targets and ignored entries."""
    return Evidence("multi-label", {"scores": np.asarray(scores, np.float16), "target": np.asarray(target) == 1,
                                    "ignore": np.asarray(ignore, bool)})


def segmentation_evidence(intersection_union: list) -> Evidence:
    """Per-image intersections and unions per class from a list of [2, C] arrays, one per image
    (`tasks.metrics.intersection_union` of the image's confusion matrix)."""
    both = np.stack(intersection_union).astype(np.int32)  # [N, 2, C]
    return Evidence("segmentation", {"intersection": both[:, 0], "union": both[:, 1]})
