"""What every low-shot task is: a declaration, and one run skeleton that every task family shares.

A task family (classification, multi-label, segmentation) declares, once, on its class:
- `family`, `main_score` and the figure's axis labels (`metric_label`, `axis_label`);
- `settings`: the protocol's settings in reading order, each with its seeds, its x position and tick label in the
  figures, and how its labelled subset is drawn (`shots` images per class, a `fraction` of the training images,
  or the full training set);
- `classifiers`: names in `tasks.classifiers.CLASSIFIERS`.
The leaderboard and the figures read these declarations (through `tasks.registry`); nothing about a setting is
written anywhere else. A task instance may carry other settings (`settings=`, e.g. a smaller test protocol).

`LowShotTask.run` is the one run skeleton: which records are missing -> labelled subsets -> the images whose
features they need -> cached features -> fit every pending (setting, seed, classifier) -> score -> one record
each. A family supplies what differs: how a labelled subset is drawn (`draw_subset`, or `labelled_subset`),
which features it extracts (`extract`), how a classifier is fitted (`fit`) and how fitted classifiers are scored
(`score`, or `evaluate` for all of them at once).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model_zoo.files import array_digest, digest

from .classifiers import CLASSIFIERS
from .datasets import read_name_list
from .sampling import names_to_indices, write_split_file

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


@dataclass(frozen=True)
class Fitted:
    """A classifier fitted for one record: the estimator and what the record says about how it was fitted."""
    estimator: object
    record: dict  # hyper-parameters, how they were chosen, convergence, ...
    seconds: float


class LowShotTask:
    family: str
    main_score: str
    metric_label: str
    axis_label: str
    settings: tuple[Setting, ...]
    classifiers: tuple[str, ...]
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

    def extract(self, model, ctx, rows: np.ndarray, features: list[str]) -> dict:
        """Everything the fits and the scoring read, through the feature cache (`ctx.features`)."""
        raise NotImplementedError

    def fit(self, model, ctx, classifier: str, setting: Setting, seed: int, rows: np.ndarray, extracted: dict,
            feature: str) -> Fitted:
        """Fit `classifier` on the labelled subset `rows` (positions in the extracted training features)."""
        raise NotImplementedError

    def score(self, model, ctx, key: tuple, fitted: Fitted, extracted: dict, feature: str) -> tuple[dict, dict]:
        """(metrics, record fields) of one fitted classifier on the evaluation set."""
        raise NotImplementedError

    def evaluate(self, model, ctx, fitted: dict, extracted: dict, features: dict) -> dict:
        """{key: (metrics, record fields)} for every fitted classifier; by default `score` one by one (the
        record's `seconds`: fitting + scoring)."""
        out = {}
        for key, f in fitted.items():
            t0 = time.time()
            metrics, extra = self.score(model, ctx, key, f, extracted, features[key[2]])
            out[key] = metrics, {"seconds": f.seconds + time.time() - t0, **extra}
        return out

    def record_fields(self, model, extracted: dict) -> dict:
        """Fields every record of this task carries (dataset, numbers of images, transform, ...)."""
        return {}

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

    def record_config(self, model, ctx, classifier: str, feature: str) -> dict:
        """Everything that decides a record's number except the labelled images: its `config_digest`."""
        test, _ = self.evaluation_set()
        return {"model": ctx.model_config(model), "task": self.name,
                "protocol": f"{type(self).__name__} v{self.protocol_version}", "dataset": self.data.dataset,
                "train_pool": self.train.identity, "evaluation_set": test.identity, "feature": feature,
                "geometry": self.geometry(model), "classifier": classifier,
                "rule": CLASSIFIERS[classifier].rule(self, ctx)}

    # ------------------------------------------------------------------ the shared skeleton

    def run(self, model, ctx) -> list[Path]:
        candidates = [(s, seed, c) for s in self.settings for seed in s.seeds for c in self.classifiers
                      if ctx.wanted(s.name, c)]
        features = {c: ctx.feature_for(model, c) for _, _, c in candidates}
        refused = {c for c, f in features.items() if self.features_allowed and f not in self.features_allowed}
        if refused:
            print(f"{self.name}: skipped, feature {sorted({features[c] for c in refused})} is not one of "
                  f"{self.features_allowed}")
            candidates = [p for p in candidates if p[2] not in refused]
        if not candidates:
            return []
        with ctx.lock(model, self.name):  # a second process on these results waits, then finds the records done
            return self._run(model, ctx, candidates, features)

    def _run(self, model, ctx, candidates, features) -> list[Path]:
        split_dir = Path(ctx.results) / "splits" / self.name
        subsets = {}
        for setting, seed, _ in candidates:
            if (setting.name, seed) not in subsets:
                subsets[(setting.name, seed)] = self.labelled_subset(setting, seed, split_dir)
        configs = {c: self.record_config(model, ctx, c, features[c]) for _, _, c in candidates}
        evaluation = self.data_fingerprint(*self.evaluation_set())
        keys, pending = {}, []
        for setting, seed, classifier in candidates:
            config_digest = digest(configs[classifier])
            labelled = self.data_fingerprint(self.train, subsets[(setting.name, seed)][0])
            identity = digest({"config": config_digest, "setting": setting.name, "seed": seed, "labelled": labelled,
                               "evaluation": evaluation})
            path = ctx.record_path(model, self.name, setting.name, seed, classifier, config_digest)
            ctx.configs.add(config_digest)
            keys[(setting.name, seed, classifier)] = path, {
                "config": configs[classifier], "config_digest": config_digest, "identity": identity,
                "data_fingerprint": {"labelled": labelled, "evaluation": evaluation}}
            if not ctx.is_done(path, identity):
                pending.append((setting, seed, classifier))
        if not pending:
            return []
        rows = self.feature_rows({k: subsets[k] for k in {(s.name, seed) for s, seed, _ in pending}})
        extracted = self.extract(model, ctx, rows, sorted({features[c] for _, _, c in pending}))
        if ctx.extract_only:
            return []
        position = {int(i): j for j, i in enumerate(rows)}
        fitted = {}
        for setting, seed, classifier in pending:
            idx, _ = subsets[(setting.name, seed)]
            fitted[(setting.name, seed, classifier)] = self.fit(
                model, ctx, classifier, setting, seed, np.array([position[int(i)] for i in idx]), extracted,
                features[classifier])
        scored = self.evaluate(model, ctx, fitted, extracted, features)
        common = self.record_fields(model, extracted)
        written = []
        for key, (metrics, extra) in scored.items():
            setting, seed, classifier = key
            idx, source = subsets[(setting, seed)]
            path, identity = keys[key]
            record = {**common, "split_source": source, "feature": features[classifier], "num_train": int(len(idx)),
                      "preprocessing": CLASSIFIERS[classifier].preprocessing, **fitted[key].record, **extra,
                      **identity}
            written.append(ctx.write(path, model, self, setting, seed, classifier, metrics, record))
        return written


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

    def extract(self, model, ctx, rows: np.ndarray, features: list[str]) -> dict:
        transform = model.transform(self.data.resize, self.data.crop)
        return {"rows": rows, "transform": transform, "prepared": {},
                "train": ctx.features(model, self.train, rows, transform, features),
                "test": self.evaluation_features(model, ctx, features)}

    def evaluation_features(self, model, ctx, features: list[str]) -> dict:
        """{feature: [N, D]} of the whole evaluation set, through the feature cache."""
        test = self.data.test
        return ctx.features(model, test, np.arange(len(test)), model.transform(self.data.resize, self.data.crop),
                            features)

    def fit(self, model, ctx, classifier, setting, seed, rows, extracted, feature) -> Fitted:
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
