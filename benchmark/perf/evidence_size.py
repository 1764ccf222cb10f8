"""The size of one record's evidence file at the published evaluation sets, written by the suite's own writer.

    python -m lowshot.benchmark.perf.evidence_size

The arrays have the real shapes and dtypes; their content is simulated (stated per line), because compression
depends on it: ImageNet val (50,000 images, 1,000 classes in folder order, 50 each) at 50 % and 80 % top-1;
COCO val2014 (40,504 x 80) with sigmoid scores of N(-3, 2) logits and 2.9 positives per image (COCO's mean);
ADE20K validation (2,000 x 150) with 10 classes in each 512 x 683 image and predictions of 14 classes.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from lowshot.benchmark.evidence import write_evidence
from lowshot.tasks.evidence import multi_label_evidence, segmentation_evidence, single_label_evidence


def _imagenet(rng, accuracy):
    target = np.repeat(np.arange(1000), 50)
    return single_label_evidence(np.where(rng.random(50_000) < accuracy, target, (target + 1) % 1000), target)


def _coco(rng):
    n, c = 40_504, 80
    scores = 1 / (1 + np.exp(-rng.normal(-3, 2, (n, c))))
    target = rng.random((n, c)) < 2.9 / c
    return multi_label_evidence(scores, target, np.zeros((n, c), bool))


def _ade20k(rng):
    per_image = []
    pixels = 512 * 683
    for _ in range(2_000):
        truth = rng.choice(150, 10, replace=False)
        extra = rng.choice(np.setdiff1d(np.arange(150), truth), 4, replace=False)
        area = np.zeros(150, np.int64)
        area[truth] = rng.multinomial(pixels, rng.dirichlet(np.ones(10)))
        inter = np.zeros(150, np.int64)
        inter[truth] = (area[truth] * rng.uniform(0.3, 0.9, 10)).astype(np.int64)
        predicted = area.copy()
        predicted[extra] = rng.integers(100, 5_000, 4)
        per_image.append(np.stack([inter, area + predicted - inter]))
    return segmentation_evidence(per_image)


def main() -> None:
    rng = np.random.default_rng(0)
    cases = [("ImageNet val, 50,000 images, top-1 50 %", _imagenet(rng, 0.5)),
             ("ImageNet val, 50,000 images, top-1 80 %", _imagenet(rng, 0.8)),
             ("COCO val2014, 40,504 x 80 scores", _coco(rng)),
             ("ADE20K validation, 2,000 x 150 intersections + unions", _ade20k(rng))]
    with tempfile.TemporaryDirectory() as tmp:
        for what, evidence in cases:
            field = write_evidence(Path(tmp) / "record.json", evidence)
            raw = sum(a.nbytes for a in evidence.arrays.values())
            print(f"{what}: {field['bytes'] / 1e3:,.1f} kB per record (arrays {raw / 1e3:,.1f} kB before compression)")


if __name__ == "__main__":
    main()
