"""What a run *is*: models x tasks, with the feature cache, record writing and the skip-if-done rule."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

from filelock import FileLock

from lowshot.model_zoo.errors import NonFiniteError
from lowshot.tasks.classifiers import get_classifier

from . import distributed
from . import progress as progress_lines
from .features import FeatureCache, default_workers, model_identity
from .records import MalformedRecord, safe_name, environment, read_record, record_path, write_record


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
    configs: set = field(default_factory=set)  # config digests of the records this run asked for (done or not)

    def __post_init__(self):
        if self.workers is None:
            self.workers = default_workers()

    def feature_for(self, model, classifier: str) -> str:
        """The feature `classifier` reads: `--feature` when given, else the one the model's EvalConfig names."""
        return self.feature or get_classifier(classifier).feature(model.eval_config)

    def classifier_id(self, model, classifier: str) -> str:
        """A record's classifier id: the name, plus `@feature` when that is not the classifier's own feature, plus the
        user's choice of its hyper-parameters (`logreg λ=cv`): records of other choices are kept beside each other
        and shown in their own columns."""
        spec = get_classifier(classifier)
        feature = self.feature_for(model, classifier)
        name = classifier if feature == spec.feature(model.eval_config) else f"{classifier}@{feature}"
        variant = spec.variant(self)
        return f"{name} {variant}" if variant else name

    def wanted(self, setting: str, classifier: str) -> bool:
        """Asked for by --setting / --classifier (or no filter)."""
        return (self.classifiers is None or classifier in self.classifiers) and (
            self.settings is None or setting in self.settings)

    @staticmethod
    def model_config(model) -> dict:
        return model_identity(model)

    def record_path(self, model, task: str, setting: str, seed: int, classifier: str, config_digest: str) -> Path:
        return record_path(self.results, model.info.name, task, setting, seed, self.classifier_id(model, classifier),
                           config_digest)

    def is_done(self, path: Path, identity: str) -> bool:
        """A record is done when it exists with this identity (unless --overwrite); one of another identity (other
        data, other splits) or an unreadable one is computed again."""
        if self.overwrite or not path.exists():
            return False
        try:
            return read_record(path).get("identity") == identity
        except MalformedRecord:
            return False

    def lock(self, model, task: str):
        """The lock one process holds while it computes the records of `model` on `task` in these results (none for
        the ranks of one torchrun job: they work together, on shards)."""
        if self.cache.sharded and distributed.active():
            return contextlib.nullcontext()
        path = Path(self.results) / ".locks" / f"{safe_name(model.info.name)}--{safe_name(task)}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path))

    def features(self, model, source, indices, transform, names):
        return self.cache.get(model, source, indices, transform, names, self.batch_size, self.workers, self.progress)

    def feature_cached(self, model, source, indices, transform, names) -> dict[str, bool]:
        """{name: whether the cache holds that feature set} (present; it is verified when it is read)."""
        return {n: self.cache.is_cached(model, source, indices, transform, n) for n in names}

    def bar(self, total: int, desc: str, unit: str = "it", leave: bool = True) -> progress_lines.Progress:
        """A progress bar on a terminal, periodic log lines otherwise, nothing under --quiet (`benchmark.progress`)."""
        return progress_lines.Progress(total, desc, unit, enabled=self.progress, leave=leave)

    def log(self, line: str) -> None:
        """One line of the run's story (not under --quiet), printed without tearing a progress bar."""
        if self.progress:
            progress_lines.write(line)

    def write(self, path: Path, model, task, setting: str, seed: int, classifier: str, metrics: dict,
              fields: dict) -> Path:
        return self.write_scores(path, model, task.name, task.family, task.main_score, setting, seed,
                                 self.classifier_id(model, classifier), metrics, fields)

    def write_scores(self, path: Path, model, task: str, family: str, main_score: str, setting: str, seed: int,
                     classifier_id: str, metrics: dict, fields: dict) -> Path:
        """Write one record with the model's provenance (`write` for a task's classifier; label-free scores call
        this directly)."""
        bad = {k: v for k, v in metrics.items() if not isinstance(v, (int, float)) or not math.isfinite(v)}
        if bad:
            raise NonFiniteError(f"{model.info.name} {task} {setting} seed {seed} {classifier_id}: metric(s) {bad} "
                                 f"are not finite numbers; no record was written to {path}")
        info = model.info
        record = {
            "model": info.name, "method": info.method, "model_source": info.source, "checkpoint": info.checkpoint,
            "checkpoint_sha256": info.sha256, "revision": info.revision, "weights": info.weights, "layout": info.layout,
            "architecture": {**asdict(info.arch), "num_heads": info.num_heads},
            "task": task, "family": family, "main_score": main_score,
            "setting": setting, "seed": seed, "classifier": classifier_id,
            "metrics": metrics, **{k: asdict(v) if is_dataclass(v) else v for k, v in fields.items()},
            "environment": environment(self.device), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        return write_record(path, record)
