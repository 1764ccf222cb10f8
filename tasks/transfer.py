"""Few-shot transfer: a representation's low-shot accuracy on thirteen downstream datasets (and an embedded one).

The protocol, one dataset at a time:
1. Data: the dataset's official train / test split (`TRANSFER_DATASETS`: split, metric, classes, eval resize,
   expected folder, source), read from its usual on-disk format (`tasks.datasets.transfer`).
2. Labelled subsets: k in {1, 2, 4, 8, 16} images of every class of the train split, three seeds each (saved as
   split files under `<results>/splits/<task>/`, read back on every later run and checked to hold exactly k
   images of every class), plus the full train split.
3. Images: shorter side to the dataset's eval resize with the method's interpolation, centre crop, the method's
   mean / std. Feature: the model's low-shot feature; per-sample centring + L2.
4. Logistic regression (L2, no intercept, λ / N); λ chosen by 3-fold cross-validation within the labelled
   subset itself for k >= 2 and the full set; with one image per class no held-out image has a class the
   fold's fit has seen, so λ is the literature default (0.0025, MSN's 1-image value) and the record says so.
   The test split never chooses anything. Also DINO's weighted k-NN, as in the classification task.
5. Score on the full test split: top-1, or mean per-class accuracy where the literature reports it (Aircraft,
   Caltech-101, Flowers, Pets); both are recorded.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lowshot.model_zoo.errors import BadInputError, LowshotWarning

from .base import FeatureVectorTask, Setting
from .classifiers import DEFAULT_LAMBDA, LambdaPolicy
from .datasets import SplitError, find_dataset_folder
from .datasets import transfer as readers
from .evidence import single_label_evidence
from .metrics import mean_per_class_accuracy, top1_accuracy
from .sampling import sample_k_per_class

SHOTS = (1, 2, 4, 8, 16)
TRANSFER_SETTINGS = tuple(Setting(f"{k}shot", str(k), k, shots=k) for k in SHOTS) + (
    Setting("full", "full", 64, seeds=(1,)),)


@dataclass(frozen=True)
class TransferDataset:
    """What the README's datasets table and the task declarations read about one transfer dataset."""
    key: str  # task name: transfer-<key>
    title: str
    folder: str  # expected under --data-root
    markers: tuple[str, ...]  # what the folder must hold
    split: str  # the official train / test split, as used
    metric: str  # "top1" or "mean_per_class"
    num_classes: int
    resize: int
    crop: int
    url: str
    read: Callable  # folder -> (train pool, test set)

    @property
    def task(self) -> str:
        return f"transfer-{self.key}"


# Eval resize: shorter side 256, centre crop 224 (the ImageNet protocol) for photos; images that are small
# already (CIFAR 32 px, GTSRB ~30-250 px, PCam 96 px, EuroSAT 64 px) are resized to 224 whole, without a crop
# that could cut their only object.
TRANSFER_DATASETS: dict[str, TransferDataset] = {d.key: d for d in [
    TransferDataset("cifar10", "CIFAR-10", "cifar-10-batches-py", ("data_batch_1", "test_batch", "batches.meta"),
                    "train 50,000 / test 10,000", "top1", 10, 224, 224,
                    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", readers.read_cifar10),
    TransferDataset("cifar100", "CIFAR-100", "cifar-100-python", ("train", "test", "meta"),
                    "train 50,000 / test 10,000", "top1", 100, 224, 224,
                    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", readers.read_cifar100),
    TransferDataset("flowers102", "Oxford Flowers-102", "flowers-102", ("jpg", "imagelabels.mat", "setid.mat"),
                    "train+val 2,040 / test 6,149", "mean_per_class", 102, 256, 224,
                    "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/", readers.read_flowers102),
    TransferDataset("pets", "Oxford-IIIT Pets", "oxford-iiit-pet", ("images", "annotations"),
                    "trainval 3,680 / test 3,669", "mean_per_class", 37, 256, 224,
                    "https://www.robots.ox.ac.uk/~vgg/data/pets/", readers.read_pets),
    TransferDataset("dtd", "DTD", "dtd", ("dtd/images", "dtd/labels"),
                    "train1+val1 3,760 / test1 1,880", "top1", 47, 256, 224,
                    "https://www.robots.ox.ac.uk/~vgg/data/dtd/", readers.read_dtd),
    TransferDataset("food101", "Food-101", "food-101", ("images", "meta"),
                    "train 75,750 / test 25,250", "top1", 101, 256, 224,
                    "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/", readers.read_food101),
    TransferDataset("aircraft", "FGVC-Aircraft (variant)", "fgvc-aircraft-2013b", ("data/images", "data/variants.txt"),
                    "trainval 6,667 / test 3,333", "mean_per_class", 100, 256, 224,
                    "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/", readers.read_aircraft),
    TransferDataset("cars", "Stanford Cars", "stanford_cars", ("devkit", "cars_train", "cars_test"),
                    "train 8,144 / test 8,041", "top1", 196, 256, 224,
                    "https://ai.stanford.edu/~jkrause/cars/car_dataset.html", readers.read_cars),
    TransferDataset("caltech101", "Caltech-101", "caltech101", ("101_ObjectCategories",),
                    "30 per class train / rest test (no official split)", "mean_per_class", 101, 256, 224,
                    "https://data.caltech.edu/records/mzrjq-6wc02", readers.read_caltech101),
    TransferDataset("sun397", "SUN397", "SUN397", ("ClassName.txt",),
                    "partition 1: train 19,850 / test 19,850", "top1", 397, 256, 224,
                    "https://vision.princeton.edu/projects/2010/SUN/", readers.read_sun397),
    TransferDataset("eurosat", "EuroSAT (RGB)", "eurosat", ("2750",),
                    "80 % / 20 % of each class (no official split)", "top1", 10, 224, 224,
                    "https://github.com/phelber/EuroSAT", readers.read_eurosat),
    TransferDataset("gtsrb", "GTSRB", "gtsrb", ("GTSRB/Training", "GTSRB/Final_Test/Images", "GT-final_test.csv"),
                    "train 26,640 / test 12,630", "top1", 43, 224, 224,
                    "https://benchmark.ini.rub.de/gtsrb_dataset.html", readers.read_gtsrb),
    TransferDataset("pcam", "PatchCamelyon", "pcam", ("camelyonpatch_level_2_split_train_x.h5",
                                                      "camelyonpatch_level_2_split_test_x.h5"),
                    "train 262,144 / test 32,768", "top1", 2, 224, 224,
                    "https://github.com/basveeling/pcam", readers.read_pcam),
]}


@dataclass
class TransferData:
    dataset: str
    train: object
    test: object
    resize: int
    crop: int
    split: str  # the split as declared (recorded)


class LowShotTransfer(FeatureVectorTask):
    """k-shot transfer to one dataset, scored by top-1 (`LowShotTransferMeanPerClass`: mean per-class accuracy)."""
    family = "transfer"
    main_score = "top1"
    metric_label = "top-1 accuracy (%)"
    axis_label = "labelled images per class (k)"
    settings = TRANSFER_SETTINGS
    label_kind = "single-label"
    lambda_policy = LambdaPolicy({"shots": DEFAULT_LAMBDA, "full": DEFAULT_LAMBDA},
                                 "MSN's 1-image value 0.0025 where λ cannot be cross-validated",
                                 grid=(0.00025, 0.0025, 0.025, 0.25, 2.5), cross_validate=True)

    def draw_subset(self, setting: Setting, seed: int) -> np.ndarray:
        try:
            return sample_k_per_class(self.train.targets, setting.shots, seed)
        except ValueError as e:
            raise SplitError(f"{self.name}: the train split of {self.train.identity} cannot give a "
                             f"{setting.name} subset: {e}") from None

    def labelled_subset(self, setting: Setting, seed: int, split_dir: Path) -> tuple[np.ndarray, str]:
        idx, source = super().labelled_subset(setting, seed, split_dir)
        if setting.kind == "shots":
            present = np.unique(self.train.targets)
            counts = np.bincount(self.train.targets[idx], minlength=len(self.train.classes))[present]
            wrong = np.flatnonzero(counts != setting.shots)
            if wrong.size:
                raise SplitError(f"split file {source} should hold {setting.shots} image(s) of each of the "
                                 f"{len(present)} classes; {self.train.classes[present[wrong[0]]]!r} has "
                                 f"{int(counts[wrong[0]])}")
        return idx, source

    def labels(self, source, indices):
        return np.asarray(source.targets)[indices], None

    def score(self, model, ctx, key, fitted, extracted, feature):
        pred = fitted.estimator.predict(self.test_features(extracted, key[2], feature))
        target = np.asarray(self.data.test.targets)
        return ({"top1": top1_accuracy(pred, target), "mean_per_class": mean_per_class_accuracy(pred, target)},
                {"evidence": single_label_evidence(pred, target)})

    def record_fields(self, model, extracted):
        return {**super().record_fields(model, extracted), "num_classes": len(self.train.classes),
                "split": self.data.split}


class LowShotTransferMeanPerClass(LowShotTransfer):
    main_score = "mean_per_class"
    metric_label = "mean per-class accuracy (%)"


def protocol_of(spec: TransferDataset) -> type[LowShotTransfer]:
    return LowShotTransferMeanPerClass if spec.metric == "mean_per_class" else LowShotTransfer


def check_every_class_trains(train, test, what: str) -> None:
    """A class with test images but no training image can never be predicted (its k-shot subsets cannot be drawn,
    and the score would silently lack it): an error naming the dataset's split and the class, before any work."""
    untrained = sorted(set(np.unique(test.targets).tolist()) - set(np.unique(train.targets).tolist()))
    if untrained:
        names = ", ".join(repr(train.classes[c]) for c in untrained[:3]) + (" ..." if len(untrained) > 3 else "")
        raise BadInputError(f"{what}: {len(untrained)} class(es) have test images but no training image in "
                            f"{train.identity}: {names}")


def transfer_data(spec: TransferDataset, data_root) -> TransferData:
    """The dataset of `spec` at `<data_root>/<spec.folder>`; a FileNotFoundError naming that folder otherwise."""
    folder = Path(find_dataset_folder(data_root, spec.title, [spec.folder], spec.markers))
    train, test = spec.read(folder)
    check_every_class_trains(train, test, f"{spec.title} at {folder}")
    present = len(np.unique(train.targets))
    if present != spec.num_classes:  # e.g. a partial copy: its numbers are not the dataset's
        warnings.warn(f"{spec.title} at {folder}: the train split has images of {present} classes, the official "
                      f"dataset {spec.num_classes}", LowshotWarning, stacklevel=2)
    return TransferData(spec.key, train, test, spec.resize, spec.crop, spec.split)


def embedded_data(image_size: int = 64) -> TransferData:
    """The embedded texture / colour domain (`tasks.datasets.synthetic_textures`), at its native size."""
    from .datasets.synthetic_textures import PER_CLASS, SyntheticTextures

    return TransferData("synthetic-textures", SyntheticTextures("train", image_size),
                        SyntheticTextures("test", image_size), image_size, image_size,
                        f"train {PER_CLASS['train']} / test {PER_CLASS['test']} per class (generated)")
