"""What a run *is*: the one run skeleton every task family goes through, and the services tasks receive.

`run_task(task, model, ctx)`: the plan (`benchmark.planning`: which records are missing, their labelled subsets
and identities, the feature sets they read) -> under the (model, task) lock, the features through the verified
cache (`task.extract`) -> every pending classifier fitted on its labelled subset (`task.fit`, one progress step
each) -> scored on the evaluation set (`task.evaluate`) -> one record each; then the label-free scores of the
evaluation features (`tasks.spectrum`), written the same way. `RunContext` holds the run's options and implements
`tasks.services.RunServices`, the interface through which task hooks read features, cache arrays and report
progress: tasks never reach up into this module.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

from filelock import FileLock

import numpy as np

from lowshot.model_zoo.errors import NonFiniteError
from lowshot.tasks.base import FeatureVectorTask, LowShotTask, named_warnings, record_name
from lowshot.tasks.classifiers import CLASSIFIERS, get_classifier
from lowshot.tasks.spectrum import LABEL_FREE, LABEL_FREE_SCORES

from . import distributed
from . import progress as progress_lines
from .evidence import evidence_beside
from .features import FeatureCache, default_workers
from .planning import TaskPlan, plan_task, training_rows
from .records import MalformedRecord, environment, read_record, safe_name, write_record


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

    def wants_label_free(self) -> bool:
        """The label-free scores run unless --setting or --classifier narrow the run (`--setting label-free` asks
        for them alone)."""
        if self.settings is not None:
            return LABEL_FREE in self.settings
        return self.classifiers is None

    def is_done(self, path: Path, identity: str) -> bool:
        """A record is done when it exists with this identity (unless --overwrite); one of another identity (other
        data, other splits) or an unreadable one is computed again."""
        if self.overwrite or not path.exists():
            return False
        try:
            return read_record(path).get("identity") == identity
        except MalformedRecord:
            return False

    def is_planned_done(self, planned) -> bool:
        return self.is_done(planned.path, planned.identity["identity"])

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

    def array(self, description: dict, shape: tuple, dtype, fill) -> np.ndarray:
        return self.cache.array(description, shape, dtype, fill)

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

    def write(self, path: Path, model, task: str, family: str, main_score: str, setting: str, seed: int,
              classifier_id: str, metrics: dict, fields: dict) -> Path:
        """Write one record with the model's provenance (the one way every record is written)."""
        bad = {k: v for k, v in metrics.items() if not isinstance(v, (int, float)) or not math.isfinite(v)}
        if bad:
            raise NonFiniteError(f"{model.info.name} {task} {setting} seed {seed} {classifier_id}: metric(s) {bad} "
                                 f"are not finite numbers; no record was written to {path}")
        info = model.info
        record = {
            "model": info.name, "method": info.method, "model_source": info.source, "checkpoint": info.checkpoint,
            "checkpoint_sha256": info.sha256, "revision": info.revision, "weights": info.weights, "layout": info.layout,
            "architecture": info.architecture(),
            "run": info.run, "training_step": info.training_step, "task": task, "family": family, "main_score": main_score,
            "setting": setting, "seed": seed, "classifier": classifier_id,
            "metrics": metrics, **{k: asdict(v) if is_dataclass(v) else v for k, v in fields.items()},
            "environment": environment(self.device), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        return write_record(path, record)


def run_task(task: LowShotTask, model, ctx: RunContext, plan: TaskPlan | None = None) -> list[Path]:
    """Compute the missing records of `plan` (default: a new plan of `task` for `model`); returns the records
    written."""
    plan = plan or plan_task(task, model, ctx)
    if not plan.todo:
        return []
    with ctx.lock(model, task.name):  # a second process on these results waits, then finds the records done
        # done by another process meanwhile?
        pending = [(s, seed, c) for s, seed, c in plan.pending if not ctx.is_planned_done(plan.keys[(s.name, seed, c)])]
        label_free = [n for n in plan.label_free_pending if not ctx.is_planned_done(plan.label_free[n])]
        written = _fit_and_score(task, model, ctx, plan, pending) if pending else []
        if label_free:
            written += _score_label_free(task, model, ctx, plan, label_free)
    return written


def _fit_and_score(task: LowShotTask, model, ctx: RunContext, plan: TaskPlan, pending: list) -> list[Path]:
    features, subsets = plan.features, plan.subsets
    rows = training_rows(task, plan, pending)
    wanted = sorted({features[c] for _, _, c in pending})
    if ctx.extract_only:  # cache the features the pending records read, nothing more (torchrun)
        with named_warnings(f"{record_name(model, task.name)} (feature extraction)"):
            for request in task.feature_requests(model, rows, wanted):
                ctx.features(model, *request)
        return []
    with named_warnings(f"{record_name(model, task.name)} (feature extraction)"):
        extracted = task.extract(model, ctx, rows, wanted)
    position = {int(i): j for j, i in enumerate(rows)}
    fitted = {}
    with ctx.bar(len(pending), f"{record_name(model, task.name)}: fits", "record") as bar:
        for setting, seed, classifier in pending:
            idx, _ = subsets[(setting.name, seed)]
            with named_warnings(record_name(model, task.name, setting.name, seed, classifier)):
                fitted[(setting.name, seed, classifier)] = task.fit(
                    model, ctx, classifier, setting, seed, np.array([position[int(i)] for i in idx]), extracted,
                    features[classifier])
            bar.update()
    with named_warnings(f"{record_name(model, task.name)} (evaluation of {len(fitted)} record(s))"):
        scored = task.evaluate(model, ctx, fitted, extracted, features)
    common = task.record_fields(model, extracted)
    chance = task.chance_level(extracted)
    if chance is not None:
        common["chance"] = chance
    written = []
    for key, (metrics, extra) in scored.items():
        setting, seed, classifier = key
        idx, source = subsets[(setting, seed)]
        planned = plan.keys[key]
        # per-image arrays, written beside the record (which names and checksums them), gone if the record fails
        with evidence_beside(planned.path, extra.get("evidence")) as evidence:
            if evidence is not None:
                extra = {**extra, "evidence": evidence}
            record = {**common, "split_source": source, "feature": features[classifier], "num_train": int(len(idx)),
                      "preprocessing": CLASSIFIERS[classifier].preprocessing, **fitted[key].record, **extra,
                      **planned.identity}
            written.append(ctx.write(planned.path, model, task.name, task.family, task.main_score, setting, seed,
                                     planned.classifier_id, metrics, record))
    return written


def _score_label_free(task: FeatureVectorTask, model, ctx: RunContext, plan: TaskPlan, names: list[str]) -> list[Path]:
    """The label-free scores of the evaluation features (a cache hit when the classifiers read them)."""
    feature = plan.label_free_feature
    z = np.asarray(task.evaluation_features(model, ctx, [feature])[feature])
    written = []
    for score in LABEL_FREE_SCORES:
        if score.name not in names:
            continue
        planned = plan.label_free[score.name]
        fields = {"dataset": task.data.dataset, "feature": feature, "num_test": len(z), "dimension": int(z.shape[1]),
                  "hyperparameters_chosen_by": "none: no label, no fit", **planned.identity}
        with named_warnings(record_name(model, task.name, LABEL_FREE, 1, score.name)):
            metrics = score.compute(z)
        written.append(ctx.write(planned.path, model, task.name, LABEL_FREE, score.main_score, LABEL_FREE, 1,
                                 planned.classifier_id, metrics, fields))
    return written
