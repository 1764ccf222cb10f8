"""Low-shot classification: ImageNet-1K with 1/2/5 images per class (three official seeds) and 1 %.

The protocol, as MSN's public evaluation code (logistic_eval.py) runs it:
1. Images: shorter side resized to 256 with the method's own interpolation, center crop 224, the method's
   mean/std (the embedded dataset: its native 64 px, no crop).
2. Feature: the model's `lowshot_feature` (MSN: last-block CLS before the final norm; others: normed CLS),
   computed once for the union of all split images and for the evaluation set, and cached.
3. Each feature vector centred by its own mean and L2-normalised (`tasks.classifiers.preprocess`).
4. Multinomial logistic regression, L2, no intercept, λ / N; λ from the literature (0.0025, MSN README,
   for 1/2/5 images; 0.075 for 1 %, the MSN authors' recommendation) or chosen by cross-validation on the
   labelled subset (`--lambd cv`). The evaluation set never chooses anything.
5. Also DINO's weighted k-NN (k = 20, T = 0.07, cosine) on the model's k-NN feature: the final-norm CLS, the
   output DINO's eval_knn.py runs it on, for every method.
6. Top-1 on the full evaluation set; one record per split and classifier; mean ± std over seeds in the
   leaderboard.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import FeatureVectorTask, Setting
from .classifiers import DEFAULT_LAMBDA, LambdaPolicy
from .evidence import single_label_evidence
from .metrics import top1_accuracy


@dataclass
class ClassificationData:
    dataset: str  # dataset id for records ("imagenet-1k", "synthetic-scenes")
    train: object  # the training images of every split (names, targets, load_image, identity)
    test: object  # evaluation images
    splits: dict  # (setting name, seed) -> (image names, where they came from)
    resize: int
    crop: int


class LowShotClassification(FeatureVectorTask):
    """One low-shot classification task over a `ClassificationData` (ImageNet or the embedded dataset)."""

    family = "classification"
    main_score = "top1"
    metric_label = "top-1 accuracy (%)"
    axis_label = "labelled images per class"
    # x of 1 %: ImageNet's 1 % list has 12.8 labelled images per class on average.
    settings = (Setting("1img", "1", 1, shots=1), Setting("2img", "2", 2, shots=2), Setting("5img", "5", 5, shots=5),
                Setting("1percent", "1 %", 12.8, seeds=(1,), fraction=0.01))
    label_kind = "single-label"
    lambda_policy = LambdaPolicy({"shots": DEFAULT_LAMBDA, "fraction": 0.075},
                                 "MSN: 0.0025 for 1/2/5 img, 0.075 for 1 %",
                                 grid=(0.00025, 0.0025, 0.025, 0.075, 0.25))

    def labelled_subset(self, setting: Setting, seed: int, split_dir: Path) -> tuple[np.ndarray, str]:
        names, source = self.data.splits[(setting.name, seed)]
        return np.array([self.train.index_of(n) for n in names]), source

    def feature_rows(self, subsets: dict) -> np.ndarray:
        """The images of every declared split, whichever records are pending: one cached feature set per model
        (ImageNet's training pool is exactly these images)."""
        names = {n for names, _ in self.data.splits.values() for n in names}
        return np.unique([self.train.index_of(n) for n in names])

    def labels(self, source, indices):
        return np.asarray(source.targets)[indices], None

    def score(self, model, ctx, key, fitted, extracted, feature):
        pred, target = fitted.estimator.predict(self.test_features(extracted, key[2], feature)), np.asarray(
            self.data.test.targets)
        return {"top1": top1_accuracy(pred, target)}, {"evidence": single_label_evidence(pred, target)}

    def record_fields(self, model, extracted):
        return {**super().record_fields(model, extracted), "num_classes": len(self.train.classes)}


# --- data sources ------------------------------------------------------------------------------------------

def imagenet_data(data_root: str | Path, settings, splits_dir: str | Path | None = None, custom_splits: bool = False,
                  progress: bool = True) -> ClassificationData:
    """ImageNet-1K ImageFolder at `data_root` with the official split file of every (setting, seed) of `settings`:
    downloaded into the cache, or read from `splits_dir` (laid out like the MSN repository). Every file is checked
    against the published sha256; `custom_splits=True` accepts other files (e.g. a subset of ImageNet) and says so
    in the records."""
    from lowshot.model_zoo.download import ChecksumError, fetch
    from lowshot.model_zoo.files import sha256_file

    from .datasets import SplitError
    from .datasets.imagenet import IMAGENET_SPLITS, ImageFolderSplit, read_split

    official = {}
    for split in IMAGENET_SPLITS.values():
        name, _, seed = split.split_id.partition("-seed")
        official[(name, int(seed or 1))] = split
    root = Path(data_root).expanduser()
    train_classes = ImageFolderSplit.class_folders(root / "train")
    splits = {}
    for setting in settings:
        for seed in setting.seeds:
            split = official.get((setting.name, seed))
            if split is None:
                raise SplitError(f"no official ImageNet split file for setting {setting.name} seed {seed}; "
                                 f"official: {sorted(IMAGENET_SPLITS)}")
            if splits_dir:
                path = Path(splits_dir) / split.relpath
                if not path.is_file():
                    raise SplitError(f"split file {path} not found (expected the MSN layout {split.relpath})")
                digest = sha256_file(path)
                if digest != split.sha256 and not custom_splits:
                    raise ChecksumError(f"split file {path} is not the official {split.relpath} (sha256 {digest}, "
                                        f"expected {split.sha256}); pass custom_splits / --custom-splits to use it "
                                        "anyway")
            else:
                path, digest = fetch(split.url, "splits--" + split.relpath.replace("/", "--"), split.sha256,
                                     progress=progress)
            names = read_split(path, train_classes, split.images_per_class)
            kind = "official" if digest == split.sha256 else "custom"
            splits[(setting.name, seed)] = (tuple(names), f"{path} ({kind}, sha256 {digest})")
    union = sorted({n for names, _ in splits.values() for n in names})
    train = ImageFolderSplit(root, "train", names=union, classes=train_classes)
    test = ImageFolderSplit(root, "val", classes=train_classes)
    return ClassificationData("imagenet-1k", train, test, splits, resize=256, crop=224)


def embedded_data(settings, image_size: int = 64) -> ClassificationData:
    """The embedded synthetic scenes, with split lists made like the ImageNet ones for every (setting, seed) of
    `settings` (k images per class, or a fraction of each class)."""
    from .datasets import synthetic

    source = f"generator v{synthetic.VERSION}"
    splits = {}
    for setting in settings:
        for seed in setting.seeds:
            names = (synthetic.lowshot_split_names(seed, setting.shots) if setting.kind == "shots"
                     else synthetic.fraction_names(setting.fraction, seed))
            splits[(setting.name, seed)] = (tuple(names), source)
    train = synthetic.SyntheticScenes("classification", "train", image_size)
    test = synthetic.SyntheticScenes("classification", "test", image_size)
    return ClassificationData("synthetic-scenes", train, test, splits, resize=image_size, crop=image_size)
