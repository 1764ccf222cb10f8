"""What a run *is*: models x tasks, with the feature cache, record writing and the skip-if-done rule."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

from tasks.classifiers import get_classifier

from .features import FeatureCache, default_workers
from .records import environment, record_path, write_record


@dataclass
class RunContext:
    results: Path
    cache: FeatureCache = field(default_factory=FeatureCache)
    classifiers: tuple[str, ...] | None = None  # None: every classifier of each task
    settings: tuple[str, ...] | None = None  # None: every setting of each task (e.g. "5img", "1percent")
    overwrite: bool = False
    lambd: float | str | None = None  # None: the task's rule; "cv": cross-validation on the labelled subset
    feature: str | None = None  # None: each classifier's own feature of the model (its EvalConfig)
    device: str = "cpu"
    batch_size: int = 64
    workers: int | None = None  # DataLoader workers; None: from the machine
    progress: bool = True
    extract_only: bool = False  # tasks cache the features their missing records need, then return (torchrun)

    def __post_init__(self):
        if self.workers is None:
            self.workers = default_workers()

    def feature_for(self, model, classifier: str) -> str:
        """The feature `classifier` reads: `--feature` when given, else the one the model's EvalConfig names."""
        return self.feature or get_classifier(classifier).feature(model.eval_config)

    def _classifier_id(self, model, classifier: str) -> str:
        """A record's classifier id: the name, plus `@feature` when that is not the classifier's own feature."""
        feature = self.feature_for(model, classifier)
        return classifier if feature == get_classifier(classifier).feature(model.eval_config) else f"{classifier}@{feature}"

    def path(self, model, task: str, setting: str, seed: int, classifier: str) -> Path:
        return record_path(self.results, model.info.name, task, setting, seed, self._classifier_id(model, classifier))

    def needs(self, model, task: str, setting: str, seed: int, classifier: str) -> bool:
        return (self.classifiers is None or classifier in self.classifiers) and (
            self.settings is None or setting in self.settings) and (
            self.overwrite or not self.path(model, task, setting, seed, classifier).exists())

    def features(self, model, source, indices, transform, names):
        return self.cache.get(model, source, indices, transform, names, self.batch_size, self.workers, self.progress)

    def write(self, model, task, setting: str, seed: int, classifier: str, metrics: dict, extra: dict) -> Path:
        info = model.info
        record = {
            "model": info.name, "method": info.method, "checkpoint": info.checkpoint,
            "checkpoint_sha256": info.sha256, "weights": info.weights, "layout": info.layout,
            "architecture": {**asdict(info.arch), "num_heads": info.num_heads},
            "task": task.name, "family": task.family, "main_score": task.main_score,
            "setting": setting, "seed": seed, "classifier": self._classifier_id(model, classifier),
            "metrics": metrics, **{k: asdict(v) if is_dataclass(v) else v for k, v in extra.items()},
            "environment": environment(self.device), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        return write_record(self.path(model, task.name, setting, seed, classifier), record)
