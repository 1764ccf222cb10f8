"""Low-shot multi-label classification: Pascal VOC 2007 and MS-COCO 2014 (and the embedded scenes), mAP.

The protocol:
1. Datasets: VOC07 trainval -> train, test -> evaluation (20 classes; objects marked *difficult* are neither
   positive nor negative, in training and in scoring, as the VOC devkit does); COCO train2014 -> train,
   val2014 -> evaluation (80 classes from the instance annotations).
2. Labelled subsets: k in {1, 2, 5} images per class (images sampled until every class has >= k positives;
   an image counts for every class it contains), 1 % and 10 % of the training images; three seeds each;
   plus the full training set. Each subset is saved as a split file under `<results>/splits/<task>/` the first
   time and read back afterwards, so a rerun (or another machine given the files) uses the same images.
3. Feature: the model's low-shot feature (`--feature` picks any feature of the interface), per-sample
   centring + L2 normalisation, as in the classification task.
4. Classifier: one-vs-rest L2-regularised logistic regression (sigmoid loss, no intercept, λ / N), λ chosen
   from a grid by 3-fold cross-validation (mAP) on the labelled subset only.
5. Metric: mean average precision over classes, all-point AP (VOC 2010+ / scikit-learn) as the main score,
   VOC07 11-point AP also recorded; classes without positives in the evaluation set are left out of the mean.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classifiers import LogisticRegression, preprocess, select_lambda
from .metrics import mean_average_precision
from .sampling import names_to_indices, read_split_file, sample_fraction, sample_multilabel_k_per_class, write_split_file

LAMBDA_GRID = (0.00025, 0.0025, 0.025, 0.25)
DEFAULT_LAMBDA = 0.0025  # used when the labelled subset is too small to cross-validate
FOLDS = 3
CV_MAX_ITER = 100
SEEDS = (1, 2, 3)
SHOTS = (1, 2, 5)
FRACTIONS = {"1percent": 0.01, "10percent": 0.10}


@dataclass
class MultiLabelData:
    dataset: str
    train: object  # classes, names, targets [N, C], ignore [N, C] or absent, load_image, identity
    test: object
    resize: int
    crop: int


def settings() -> list[tuple[str, int]]:
    out = [(f"{k}shot", s) for k in SHOTS for s in SEEDS]
    out += [(name, s) for name in FRACTIONS for s in SEEDS]
    return out + [("full", 1)]


def choose_lambda(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[float, str]:
    """λ by 3-fold cross-validation (mAP) on the labelled subset; the default when it is too small to split.

    The CV fits stop at CV_MAX_ITER iterations: ranking λ values needs far less precision than the final fit."""
    if len(x) < 2 * FOLDS:
        return DEFAULT_LAMBDA, f"default {DEFAULT_LAMBDA}: {len(x)} labelled image(s) are too few for {FOLDS}-fold CV"
    lambd, scores = select_lambda(x, y, LAMBDA_GRID, n_folds=FOLDS, seed=0, multilabel=True, mask=mask,
                                  max_iter=CV_MAX_ITER)
    return lambd, f"{FOLDS}-fold cross-validation (mAP) on the labelled subset over {list(LAMBDA_GRID)}: " + \
        ", ".join(f"{k}: {v:.2f}" for k, v in scores.items())


def _ignore(ds) -> np.ndarray:
    ignore = getattr(ds, "ignore", None)
    return np.zeros(np.shape(ds.targets), bool) if ignore is None else np.asarray(ignore, bool)


class LowShotMultiLabel:
    family = "multilabel"
    main_score = "map"

    def __init__(self, name: str, data: MultiLabelData):
        self.name = name
        self.data = data

    def subset(self, setting: str, seed: int, split_dir: Path) -> tuple[np.ndarray, str]:
        """Indices of the labelled subset, from the saved split file when it exists (else sampled and saved)."""
        train = self.data.train
        path = split_dir / f"{setting}-seed{seed}.txt"
        if path.exists():
            return names_to_indices(train.names, read_split_file(path)), str(path)
        targets = np.asarray(train.targets)
        if setting == "full":
            idx = np.arange(len(train))
        elif setting in FRACTIONS:
            idx = sample_fraction(len(train), FRACTIONS[setting], seed)
        else:
            idx = sample_multilabel_k_per_class(targets, int(setting.removesuffix("shot")), seed, _ignore(train))
        if setting != "full":
            write_split_file(path, [train.names[i] for i in idx])
        return np.asarray(idx), str(path) if setting != "full" else "all training images"

    def run(self, model, ctx) -> list[Path]:
        from benchmark.features import TransformSpec

        data = self.data
        todo = [(s, seed) for s, seed in settings() if ctx.needs(model, self.name, s, seed, "logreg")]
        if not todo:
            return []
        split_dir = Path(ctx.results) / "splits" / self.name
        subsets = {key: self.subset(*key, split_dir) for key in todo}
        union = np.unique(np.concatenate([idx for idx, _ in subsets.values()]))
        transform = TransformSpec(data.resize, data.crop, model.spec.interpolation)
        feature = ctx.feature or model.lowshot_feature
        train_feats = ctx.features(model, data.train, union, transform, [feature])[feature]
        test_feats = ctx.features(model, data.test, np.arange(len(data.test)), transform, [feature])[feature]
        if ctx.extract_only:
            return []
        x_test = preprocess(np.asarray(test_feats))
        y_test, ignore_test = np.asarray(data.test.targets), _ignore(data.test)
        y_pool, ignore_pool = np.asarray(data.train.targets), _ignore(data.train)
        position = np.searchsorted(union, np.arange(len(data.train)))
        written = []
        for (setting, seed) in todo:
            t0 = time.time()
            idx, source = subsets[(setting, seed)]
            x = preprocess(np.asarray(train_feats[position[idx]]))
            y, mask = y_pool[idx], ~ignore_pool[idx]
            lambd, chosen_by = choose_lambda(x, y, mask)
            clf = LogisticRegression(lambd=lambd, multilabel=True, device=ctx.device).fit(x, y, mask=mask)
            probs = clf.predict_proba(x_test)
            m, per_class = mean_average_precision(probs, y_test, ignore_test, kind="all_point")
            m07, _ = mean_average_precision(probs, y_test, ignore_test, kind="voc07")
            written.append(ctx.write(model, self, setting, seed, "logreg", {"map": m, "map_voc07": m07}, {
                "dataset": data.dataset, "split_source": source, "feature": feature, "num_train": int(len(idx)),
                "num_test": int(len(y_test)), "num_classes": int(y_test.shape[1]), "transform": transform,
                "per_class_ap": [None if np.isnan(v) else round(float(v), 3) for v in per_class],
                "hyperparameters": {"lambd": lambd}, "preprocessing": "per-sample centring + L2",
                "hyperparameters_chosen_by": chosen_by,
                "convergence": clf.convergence_info(), "seconds": time.time() - t0}))
        return written


def voc07_data(root) -> MultiLabelData:
    from .datasets.voc import VOC2007MultiLabel
    return MultiLabelData("voc2007", VOC2007MultiLabel(root, "trainval"), VOC2007MultiLabel(root, "test"), 256, 224)


def coco_data(root) -> MultiLabelData:
    from .datasets.coco import COCOMultiLabel
    return MultiLabelData("coco2014", COCOMultiLabel(root, "train2014"), COCOMultiLabel(root, "val2014"), 256, 224)


def embedded_data(image_size: int = 64, train_pool: int | None = None) -> MultiLabelData:
    """The embedded multi-object scenes; `train_pool` keeps the first n training scenes."""
    from .datasets import FirstImages
    from .datasets.synthetic import SyntheticScenes
    train = SyntheticScenes("multilabel", "train", image_size)
    return MultiLabelData("synthetic-scenes", FirstImages(train, train_pool) if train_pool else train,
                          SyntheticScenes("multilabel", "test", image_size), image_size, image_size)
