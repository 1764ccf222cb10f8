"""What every low-shot task is: its declarations and the hooks that differ between task families.

A task family (classification, multi-label, transfer, segmentation) declares, once, on its class:
- `family`, `main_score`, `label_kind` (which classifiers fit it) and the figure's axis labels (`metric_label`,
  `axis_label`);
- `settings`: the protocol's settings in reading order, each with its seeds, its x position and tick label in the
  figures, and how its labelled subset is drawn (`shots` images per class, a `fraction` of the training images,
  or the full training set);
- its classifiers: every `ClassifierSpec` of `tasks.classifiers.CLASSIFIERS` whose `fits` names the family's
  `label_kind` (`classifiers_for`), so a new classifier is one entry.
The leaderboard, the figures and `lowshot tasks` read these declarations (through `tasks.registry`). A task
instance may carry other settings (`settings=`, e.g. a smaller test protocol).

The hooks say what differs: how a labelled subset is drawn (`draw_subset`, or `labelled_subset`), which feature
sets are read (`feature_requests`) and extracted (`extract`), how a classifier is fitted (`fit`), how fitted
classifiers are scored (`score`, or `evaluate` for all of them at once) and the chance level (`chance_level`).
The one run skeleton that calls them (plan, subsets, cached features, fits, scores, records) is the runner's
(`lowshot.benchmark.runner`); hooks receive its services through `tasks.services.RunServices` (`ctx`).
Every warning raised on the way is re-issued naming the model, task, setting, seed and classifier it concerns
(`named_warnings`).
"""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lowshot.model_zoo.errors import LowshotWarning
from lowshot.model_zoo.files import array_digest, digest

from .classifiers import CLASSIFIERS, classifiers_for
from .datasets import read_name_list
from .sampling import names_to_indices, write_split_file
from .services import RunServices

SEEDS = (1, 2, 3)


@dataclass(frozen=True)
class Setting:
    """One setting of a protocol: its labelled subset, seeds, and place in the tables and figures."""
    name: str  # in records, tables and --setting: "5img", "1percent", "full"
    label: str  # tick label in the figures: "5", "1 %"
    x: float  # x position in the figures
    seeds: tuple[int, ...] = SEEDS
    shots: int | None = None  # k labelled images per class ...
    fraction: float | None = None  # ... or this fraction of the training images; neither: all of them

    @property
    def kind(self) -> str:
        return "shots" if self.shots else "fraction" if self.fraction else "full"


FULL = Setting("full", "100 %", 100, seeds=(1,))


class NamedWarning(LowshotWarning):
    """A warning re-issued with the model, task, setting, seed and classifier it concerns in its message."""


_QUIET = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ImportWarning, ResourceWarning)


@contextlib.contextmanager
def named_warnings(what: str):
    """Re-issue every warning raised inside as a `NamedWarning` "<what>: <message>" (`what`: model, task, setting,
    seed, classifier), so that a solver's `max_iter reached` says which record it is about. Warnings already named
    pass unchanged; library deprecation notices keep their category (and their default filters)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()  # one line per distinct warning (e.g. mAP's all-point and VOC07 passes warn alike)
    for w in caught:
        if (w.category, str(w.message)) in seen:
            continue
        seen.add((w.category, str(w.message)))
        if issubclass(w.category, NamedWarning) or issubclass(w.category, _QUIET):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        else:
            warnings.warn(NamedWarning(f"{what}: {w.message}"), stacklevel=3)


def record_name(model, task: str, setting: str | None = None, seed: int | None = None,
                classifier: str | None = None) -> str:
    """`dino-tiny embedded-lowshot 5img seed 2 logreg`: how warnings and progress lines name a record."""
    parts = [model.info.name, task] + ([setting] if setting else []) + ([f"seed {seed}"] if seed is not None else [])
    return " ".join(parts + ([classifier] if classifier else []))


@dataclass(frozen=True)
class Fitted:
    """A classifier fitted for one record: the estimator and what the record says about how it was fitted."""
    estimator: object
    record: dict  # hyper-parameters, how they were chosen, convergence, ...
    seconds: float


class _FittingClassifiers:
    """`Task.classifiers` (on the class or an instance): every registered classifier that fits the family's
    `label_kind`, in registry order."""

    def __get__(self, task, cls) -> tuple[str, ...]:
        return classifiers_for(cls.label_kind)


class LowShotTask:
    family: str
    main_score: str
    metric_label: str
    axis_label: str
    settings: tuple[Setting, ...]
    label_kind: str  # "single-label", "multi-label" or "dense" (tasks.classifiers.LABEL_KINDS)
    classifiers = _FittingClassifiers()
    features_allowed: tuple[str, ...] | None = None  # None: any feature of the model interface
    protocol_version = 1  # raise it when a change of the protocol changes its numbers: old records are then stale

    def __init__(self, name: str, data, settings: tuple[Setting, ...] | None = None):
        self.name = name
        self.data = data
        if settings is not None:
            self.settings = tuple(settings)

    # ------------------------------------------------------------------ what a family supplies

    @property
    def train(self):
        """The pool labelled subsets are drawn from (names, identity, targets, load_image)."""
        return self.data.train

    def draw_subset(self, setting: Setting, seed: int) -> np.ndarray:
        """Indices of a new labelled subset of `self.train` (saved to a split file by `labelled_subset`)."""
        raise NotImplementedError

    def labelled_subset(self, setting: Setting, seed: int, split_dir: Path) -> tuple[np.ndarray, str]:
        """(indices into `self.train`, where they came from): the saved split file when it exists, else a new
        draw, saved as `<split_dir>/<setting>-seed<seed>.txt` so that every later run uses the same images."""
        if setting.kind == "full":
            return np.arange(len(self.train)), "all training images"
        path = split_dir / f"{setting.name}-seed{seed}.txt"
        if path.exists():
            return names_to_indices(self.train.names, read_name_list(path)), str(path)
        idx = np.asarray(self.draw_subset(setting, seed))
        write_split_file(path, [self.train.names[i] for i in idx])
        return idx, str(path)

    def feature_rows(self, subsets: dict) -> np.ndarray:
        """Training images whose features are extracted: by default the union of the pending subsets."""
        return np.unique(np.concatenate([idx for idx, _ in subsets.values()]))

    def extract(self, model, ctx: RunServices, rows: np.ndarray, features: list[str]) -> dict:
        """Everything the fits and the scoring read, through the feature cache (`ctx.features`)."""
        raise NotImplementedError

    def fit(self, model, ctx: RunServices, classifier: str, setting: Setting, seed: int, rows: np.ndarray,
            extracted: dict, feature: str) -> Fitted:
        """Fit `classifier` on the labelled subset `rows` (positions in the extracted training features)."""
        raise NotImplementedError

    def score(self, model, ctx: RunServices, key: tuple, fitted: Fitted, extracted: dict,
              feature: str) -> tuple[dict, dict]:
        """(metrics, record fields) of one fitted classifier on the evaluation set."""
        raise NotImplementedError

    def evaluate(self, model, ctx: RunServices, fitted: dict, extracted: dict, features: dict) -> dict:
        """{key: (metrics, record fields)} for every fitted classifier; by default `score` one by one (the
        record's `seconds`: fitting + scoring)."""
        out = {}
        for key, f in fitted.items():
            t0 = time.time()
            with named_warnings(record_name(model, self.name, *key)):
                metrics, extra = self.score(model, ctx, key, f, extracted, features[key[2]])
            out[key] = metrics, {"seconds": f.seconds + time.time() - t0, **extra}
        return out

    def record_fields(self, model, extracted: dict) -> dict:
        """Fields every record of this task carries (dataset, numbers of images, transform, ...)."""
        return {}

    def feature_requests(self, model, rows: np.ndarray, features: list[str]) -> list[tuple]:
        """The feature sets `extract` reads through the cache, as `ctx.features` arguments (source, indices,
        transform, names): what the plan counts as cached or to extract. Empty when a family does not say."""
        return []

    def chance_level(self, extracted: dict) -> dict | None:
        """{"value": the expected main score of a random prediction on the evaluation set, "rule": how it is
        computed}, recorded in every record and drawn in the figures; None when the family does not define one."""
        return None

    # ------------------------------------------------------------------ what decides a record's number

    def evaluation_set(self) -> tuple:
        """(source, indices) the fitted classifiers are scored on."""
        return self.data.test, np.arange(len(self.data.test))

    def data_fingerprint(self, source, indices) -> dict:
        """What the images (and their labels) of `source[indices]` are now: changes when a file changes."""
        return {"dataset": source.identity, "images": source.fingerprint(indices)}

    def geometry(self, model) -> dict:
        """The images as this task feeds them to the model (transform, windows...)."""
        raise NotImplementedError

    @property
    def protocol_id(self) -> str:
        """The protocol and its version, part of every record's configuration."""
        return f"{type(self).__name__} v{self.protocol_version}"


class FeatureVectorTask(LowShotTask):
    """A task whose classifiers read one feature vector per image (classification, multi-label): the training
    subsets' and the evaluation set's features come from the cache, each classifier prepares them its own way
    (`ClassifierSpec.prepare`) and is fitted by its registry entry under the task's λ policy. The family supplies
    `labels` and `score`. `self.data` has `train`, `test`, `dataset` and the protocol's `resize` / `crop`."""
    lambda_policy = None  # tasks.classifiers.LambdaPolicy

    def labels(self, source, indices) -> tuple[np.ndarray, np.ndarray | None]:
        """(targets, mask of the entries that count, or None) of `source[indices]`."""
        raise NotImplementedError

    def data_fingerprint(self, source, indices) -> dict:
        y, mask = self.labels(source, np.asarray(indices, np.int64))
        labels = array_digest(y) + ("" if mask is None else array_digest(mask))
        return {**super().data_fingerprint(source, indices), "labels": labels}

    def geometry(self, model) -> dict:
        return asdict(model.transform(self.data.resize, self.data.crop))

    def feature_requests(self, model, rows: np.ndarray, features: list[str]) -> list[tuple]:
        """The training rows' and the whole evaluation set's features."""
        transform = model.transform(self.data.resize, self.data.crop)
        test = self.data.test
        return [(self.train, rows, transform, features), (test, np.arange(len(test)), transform, features)]

    def extract(self, model, ctx: RunServices, rows: np.ndarray, features: list[str]) -> dict:
        train, test = (ctx.features(model, *request) for request in self.feature_requests(model, rows, features))
        return {"rows": rows, "transform": model.transform(self.data.resize, self.data.crop), "prepared": {},
                "train": train, "test": test}

    def chance_level(self, extracted: dict) -> dict:
        """Single-label: a uniform random guess, 100 / classes (its expected top-1 and mean per-class accuracy).
        Multi-label: random scores, whose expected AP for a class is about its positive rate in the evaluation set;
        the mean over the classes that have positives (as the mAP)."""
        test, indices = self.evaluation_set()
        y, mask = self.labels(test, np.asarray(indices, np.int64))
        y = np.asarray(y)
        if y.ndim == 2:
            counted = np.ones(y.shape, bool) if mask is None else np.asarray(mask, bool)
            positives, entries = ((y == 1) & counted).sum(0), counted.sum(0)
            rates = positives[positives > 0] / entries[positives > 0]
            return {"value": float(100 * rates.mean()), "rule": "random scores: AP of a class ~ its positive rate "
                    f"in the evaluation set, mean over the {len(rates)} classes with positives"}
        classes = getattr(self.train, "classes", None)
        n = len(classes) if classes is not None else len(np.unique(np.asarray(self.train.targets)))
        return {"value": 100.0 / n, "rule": f"uniform random guess over {n} classes (100 / {n})"}

    def evaluation_features(self, model, ctx: RunServices, features: list[str]) -> dict:
        """{feature: [N, D]} of the whole evaluation set, through the feature cache."""
        test = self.data.test
        return ctx.features(model, test, np.arange(len(test)), model.transform(self.data.resize, self.data.crop),
                            features)

    def fit(self, model, ctx: RunServices, classifier, setting, seed, rows, extracted, feature) -> Fitted:
        spec = CLASSIFIERS[classifier]
        t0 = time.time()
        x = spec.prepare(np.asarray(extracted["train"][feature][rows]))
        y, mask = self.labels(self.train, extracted["rows"][rows])
        estimator, record = spec.fit(x, y, mask=mask, policy=self.lambda_policy, kind=setting.kind,
                                     requested_lambd=ctx.lambd, device=ctx.device)
        return Fitted(estimator, record, time.time() - t0)

    def test_features(self, extracted: dict, classifier: str, feature: str):
        """The evaluation set's features as `classifier` reads them (prepared once per classifier and feature)."""
        prepared = extracted["prepared"]
        if (classifier, feature) not in prepared:
            prepared[(classifier, feature)] = CLASSIFIERS[classifier].prepare(np.asarray(extracted["test"][feature]))
        return prepared[(classifier, feature)]

    def record_fields(self, model, extracted: dict) -> dict:
        return {"dataset": self.data.dataset, "num_test": len(self.data.test), "transform": extracted["transform"]}
