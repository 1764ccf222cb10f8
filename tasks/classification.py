"""Low-shot classification: ImageNet-1K with 1/2/5 images per class (three official seeds) and 1 %.

The protocol, as MSN's public evaluation code (logistic_eval.py) runs it:
1. Images: shorter side resized to 256 with the method's own interpolation, center crop 224, ImageNet
   mean/std (the embedded dataset: its native 64 px, no crop).
2. Feature: the model's `lowshot_feature` (MSN: last-block CLS before the final norm; others: normed CLS),
   computed once for the union of all split images and for the evaluation set, and cached.
3. Each feature vector centred by its own mean and L2-normalised (`tasks.classifiers.preprocess`).
4. Multinomial logistic regression, L2, no intercept, λ / N; λ from the literature (0.0025, MSN README,
   for 1/2/5 images; 0.075 for 1 %, the MSN authors' recommendation) or chosen by cross-validation on the
   labelled subset (`lambd="cv"`). The evaluation set never chooses anything.
5. Also DINO's weighted k-NN (k = 20, T = 0.07, cosine) on the same feature.
6. Top-1 on the full evaluation set; one record per split and classifier; mean ± std over seeds in the
   leaderboard.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classifiers import KNNClassifier, LogisticRegression, preprocess, select_lambda
from .metrics import top1_accuracy

LITERATURE_LAMBDA = {"img": 0.0025, "percent": 0.075}
LAMBDA_GRID = (0.00025, 0.0025, 0.025, 0.075, 0.25)
KNN = {"k": 20, "temperature": 0.07}


@dataclass(frozen=True)
class Setting:
    name: str  # "1img", "2img", "5img", "1percent"
    seed: int
    names: tuple[str, ...]  # labelled training images (file names in the pool)
    source: str  # where the split came from (file path / URL / generator)


@dataclass
class ClassificationData:
    dataset: str  # dataset id for records ("imagenet-1k", "synthetic-scenes")
    pool: object  # training images (names, targets, load_image, identity)
    test: object  # evaluation images
    settings: list[Setting]
    resize: int
    crop: int


def default_lambda(setting: str) -> float:
    return LITERATURE_LAMBDA["percent" if setting.endswith("percent") else "img"]


class LowShotClassification:
    """One low-shot classification task over a `ClassificationData` (ImageNet or the embedded dataset)."""

    family = "classification"
    main_score = "top1"

    def __init__(self, name: str, data: ClassificationData):
        self.name = name
        self.data = data

    def run(self, model, ctx) -> list[Path]:
        from benchmark.features import TransformSpec

        data = self.data
        pool_index = {n: i for i, n in enumerate(data.pool.names)}
        setting_rows = {}
        for s in data.settings:
            setting_rows[(s.name, s.seed)] = np.array([pool_index[n] for n in s.names])
        todo = [s for s in data.settings
                if any(ctx.needs(model, self.name, s.name, s.seed, c) for c in ("logreg", "knn"))]
        if not todo:
            return []
        union = np.unique(np.concatenate([setting_rows[(s.name, s.seed)] for s in data.settings]))
        transform = TransformSpec(data.resize, data.crop, model.spec.interpolation)
        feature = ctx.feature or model.lowshot_feature
        train_feats = ctx.features(model, data.pool, union, transform, [feature])[feature]
        test_idx = np.arange(len(data.test))
        test_feats = ctx.features(model, data.test, test_idx, transform, [feature])[feature]
        if ctx.extract_only:
            return []
        test_feats = np.asarray(test_feats)
        pool_targets = np.asarray(data.pool.targets)
        test_targets = np.asarray(data.test.targets)
        x_test = preprocess(test_feats)
        position = {int(i): j for j, i in enumerate(union)}
        written = []
        for s in todo:
            rows = setting_rows[(s.name, s.seed)]
            x_train_raw = np.asarray(train_feats[[position[int(i)] for i in rows]])
            y_train = pool_targets[rows]
            common = {"dataset": data.dataset, "split_source": s.source, "feature": feature,
                      "num_train": int(len(rows)), "num_test": int(len(test_idx)),
                      "num_classes": len(data.pool.classes), "transform": transform}
            if ctx.needs(model, self.name, s.name, s.seed, "logreg"):
                t0 = time.time()
                x_train = preprocess(x_train_raw)
                lambd, chosen = self._lambda(ctx, s.name, x_train, y_train)
                clf = LogisticRegression(lambd=lambd, device=ctx.device).fit(x_train, y_train)
                top1 = top1_accuracy(clf.predict(x_test), test_targets)
                written.append(ctx.write(model, self, s.name, s.seed, "logreg", {"top1": top1}, {
                    **common, "hyperparameters": {"lambd": lambd, "lambd_over_n": lambd / len(rows)},
                    "hyperparameters_chosen_by": chosen, "preprocessing": "per-sample centring + L2",
                    "convergence": clf.convergence_info(), "seconds": time.time() - t0}))
            if ctx.needs(model, self.name, s.name, s.seed, "knn"):
                t0 = time.time()
                knn = KNNClassifier(**KNN, device=ctx.device).fit(x_train_raw, y_train)
                top1 = top1_accuracy(knn.predict(test_feats), test_targets)
                written.append(ctx.write(model, self, s.name, s.seed, "knn", {"top1": top1}, {
                    **common, "hyperparameters": dict(KNN), "hyperparameters_chosen_by": "DINO eval_knn defaults",
                    "preprocessing": "L2", "seconds": time.time() - t0}))
        return written

    @staticmethod
    def _lambda(ctx, setting: str, x_train, y_train) -> tuple[float, str]:
        if ctx.lambd == "cv":
            best, scores = select_lambda(x_train, y_train, LAMBDA_GRID, seed=0)
            return best, f"3-fold cross-validation on the labelled subset over {list(LAMBDA_GRID)}: " + \
                ", ".join(f"{k}: {v:.2f}" for k, v in scores.items())
        if ctx.lambd is not None:
            return float(ctx.lambd), "given by the user"
        return default_lambda(setting), "literature default (MSN: 0.0025 for 1/2/5 img, 0.075 for 1 %)"


# --- data sources ------------------------------------------------------------------------------------------

def imagenet_data(data_root: str | Path, splits_dir: str | Path | None = None, custom_splits: bool = False,
                  progress: bool = True) -> ClassificationData:
    """ImageNet-1K ImageFolder at `data_root` with the official split files: downloaded into the cache, or read
    from `splits_dir` (laid out like the MSN repository). Every file is checked against the published sha256;
    `custom_splits=True` accepts other files (e.g. a subset of ImageNet) and says so in the records."""
    from model_zoo.download import ChecksumError, fetch, sha256_file

    from .datasets.imagenet import IMAGENET_SPLITS, ImageFolderSplit, SplitError, read_split

    root = Path(data_root).expanduser()
    train_classes = ImageFolderSplit.class_folders(root / "train")
    settings = []
    for split in IMAGENET_SPLITS.values():
        if splits_dir:
            path = Path(splits_dir) / split.relpath
            if not path.is_file():
                raise SplitError(f"split file {path} not found (expected the MSN layout {split.relpath})")
            digest = sha256_file(path)
            if digest != split.sha256 and not custom_splits:
                raise ChecksumError(f"split file {path} is not the official {split.relpath} (sha256 {digest}, "
                                    f"expected {split.sha256}); pass custom_splits / --custom-splits to use it anyway")
        else:
            path, digest = fetch(split.url, "splits--" + split.relpath.replace("/", "--"), split.sha256,
                                 progress=progress)
        names = read_split(path, train_classes, split.images_per_class)
        name, _, seed = split.split_id.partition("-seed")
        official = "official" if digest == split.sha256 else "custom"
        settings.append(Setting(name, int(seed or 1), tuple(names), f"{path} ({official}, sha256 {digest})"))
    union = sorted({n for s in settings for n in s.names})
    pool = ImageFolderSplit(root, "train", names=union, classes=train_classes)
    test = ImageFolderSplit(root, "val", classes=train_classes)
    return ClassificationData("imagenet-1k", pool, test, settings, resize=256, crop=224)


def embedded_data(image_size: int = 64) -> ClassificationData:
    """The embedded synthetic scenes, with split lists made like the ImageNet ones (3 seeds x 1/2/5, 1 %)."""
    from .datasets import synthetic

    pool = synthetic.SyntheticScenes("classification", "train", image_size)
    test = synthetic.SyntheticScenes("classification", "test", image_size)
    settings = [Setting(f"{k}img", seed, tuple(synthetic.lowshot_split_names(seed, k)), f"generator v{synthetic.VERSION}")
                for seed in synthetic.LOWSHOT_SEEDS for k in synthetic.LOWSHOT_SHOTS]
    settings.append(Setting("1percent", 1, tuple(synthetic.one_percent_names()), f"generator v{synthetic.VERSION}"))
    return ClassificationData("synthetic-scenes", pool, test, settings, resize=image_size, crop=image_size)
