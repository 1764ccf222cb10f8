"""The plan of one task for one model, known before any work: which records the run asks for, which of them are
missing, their labelled subsets and identities, and the feature sets those read (cached or to extract).

A record's `config_digest` is the digest of everything that decides its number except the labelled images
(`record_config`); its `identity` adds the setting, the seed and the fingerprints of the labelled images and the
evaluation set. The label-free scores (`tasks.spectrum.LABEL_FREE_SCORES`) are planned here too, as one more kind
of record of a task with one feature vector per image.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lowshot.model_zoo.errors import LowshotWarning
from lowshot.model_zoo.files import digest
from lowshot.tasks.base import FeatureVectorTask, LowShotTask, named_warnings, record_name
from lowshot.tasks.classifiers import CLASSIFIERS
from lowshot.tasks.spectrum import LABEL_FREE, LABEL_FREE_SCORES, LABEL_FREE_VERSION

from .features import model_identity
from .records import record_path


@dataclass(frozen=True)
class PlannedRecord:
    """Where a record goes, its classifier id and the identity fields it is written with (config, config_digest,
    identity, data_fingerprint)."""
    path: Path
    classifier_id: str
    identity: dict


@dataclass
class TaskPlan:
    """What a run of one task for one model will do: its records (computed or done) and the feature sets they
    read (cached or to extract)."""
    model: str
    task: str
    candidates: list  # (Setting, seed, classifier) asked for
    features: dict  # classifier -> feature it reads
    subsets: dict  # (setting name, seed) -> (indices into the train pool, where they came from)
    keys: dict  # (setting name, seed, classifier) -> PlannedRecord
    pending: list  # (Setting, seed, classifier) whose record is missing or stale
    label_free: dict = field(default_factory=dict)  # score name -> PlannedRecord, every one asked for
    label_free_pending: list = field(default_factory=list)  # score names whose record is missing or stale
    label_free_feature: str | None = None
    feature_sets: list = field(default_factory=list)  # (description, cached?) of each feature set they read

    @property
    def asked(self) -> int:
        return len(self.candidates) + len(self.label_free)

    @property
    def todo(self) -> int:
        return len(self.pending) + len(self.label_free_pending)

    @property
    def done(self) -> int:
        return self.asked - self.todo

    def line(self) -> str:
        cached = sum(1 for _, c in self.feature_sets if c)
        sets = (f"; feature sets: {cached} cached, {len(self.feature_sets) - cached} to extract" if self.todo
                else " (nothing to do)")
        return f"{self.model} x {self.task}: {self.todo} record(s) to compute, {self.done} done" + sets


def record_config(task: LowShotTask, model, ctx, classifier: str, feature: str) -> dict:
    """Everything that decides a record's number except the labelled images: its `config_digest`."""
    test, _ = task.evaluation_set()
    return {"model": model_identity(model), "task": task.name, "protocol": task.protocol_id,
            "dataset": task.data.dataset, "train_pool": task.train.identity, "evaluation_set": test.identity,
            "feature": feature, "geometry": task.geometry(model), "classifier": classifier,
            "rule": CLASSIFIERS[classifier].rule(task, ctx)}


def training_rows(task: LowShotTask, plan: TaskPlan, pending: list) -> np.ndarray:
    """The training images whose features the pending records read."""
    return task.feature_rows({k: plan.subsets[k] for k in {(s.name, seed) for s, seed, _ in pending}})


def plan_task(task: LowShotTask, model, ctx) -> TaskPlan:
    """The records this run asks of `task` for `model`, which of them are missing, and the feature sets those
    read; draws (and saves) the labelled subsets, reads no image."""
    candidates = [(s, seed, c) for s in task.settings for seed in s.seeds for c in task.classifiers
                  if ctx.wanted(s.name, c)]
    features = {c: ctx.feature_for(model, c) for _, _, c in candidates}
    refused = {c for c, f in features.items() if task.features_allowed and f not in task.features_allowed}
    if refused:
        warnings.warn(f"{task.name}: skipped, feature {sorted({features[c] for c in refused})} is not one of "
                      f"{task.features_allowed}", LowshotWarning, stacklevel=2)
        candidates = [p for p in candidates if p[2] not in refused]
    plan = TaskPlan(model.info.name, task.name, candidates, features, {}, {}, [])
    if candidates:
        _plan_classifier_records(task, model, ctx, plan)
    if isinstance(task, FeatureVectorTask) and ctx.wants_label_free() and not ctx.extract_only:
        _plan_label_free_records(task, model, ctx, plan)
    if plan.pending:
        rows = training_rows(task, plan, plan.pending)
        for source, indices, transform, names in task.feature_requests(
                model, rows, sorted({features[c] for _, _, c in plan.pending})):
            for name, cached in ctx.feature_cached(model, source, indices, transform, names).items():
                plan.feature_sets.append((f"{name} of {len(indices)} {source.identity} images", cached))
    return plan


def _plan_classifier_records(task: LowShotTask, model, ctx, plan: TaskPlan) -> None:
    split_dir = Path(ctx.results) / "splits" / task.name
    for setting, seed, _ in plan.candidates:
        if (setting.name, seed) not in plan.subsets:
            with named_warnings(record_name(model, task.name, setting.name, seed)):
                plan.subsets[(setting.name, seed)] = task.labelled_subset(setting, seed, split_dir)
    configs = {c: record_config(task, model, ctx, c, plan.features[c]) for _, _, c in plan.candidates}
    evaluation = task.data_fingerprint(*task.evaluation_set())
    for setting, seed, classifier in plan.candidates:
        config_digest = digest(configs[classifier])
        labelled = task.data_fingerprint(task.train, plan.subsets[(setting.name, seed)][0])
        identity = digest({"config": config_digest, "setting": setting.name, "seed": seed, "labelled": labelled,
                           "evaluation": evaluation})
        classifier_id = ctx.classifier_id(model, classifier)
        path = record_path(ctx.results, model.info.name, task.name, setting.name, seed, classifier_id, config_digest)
        ctx.configs.add(config_digest)
        plan.keys[(setting.name, seed, classifier)] = PlannedRecord(path, classifier_id, {
            "config": configs[classifier], "config_digest": config_digest, "identity": identity,
            "data_fingerprint": {"labelled": labelled, "evaluation": evaluation}})
        if not ctx.is_done(path, identity):
            plan.pending.append((setting, seed, classifier))


def _plan_label_free_records(task: FeatureVectorTask, model, ctx, plan: TaskPlan) -> None:
    """The label-free scores of the task's evaluation features: no label, no fit, one record each."""
    feature = ctx.feature_for(model, "logreg")  # the model's low-shot feature, or --feature
    source, indices = task.evaluation_set()
    evaluation = {"dataset": source.identity, "images": source.fingerprint(indices)}
    plan.label_free_feature = feature
    for score in LABEL_FREE_SCORES:
        config = {"model": model_identity(model), "task": task.name, "dataset": task.data.dataset,
                  "evaluation_set": source.identity, "feature": feature, "geometry": task.geometry(model),
                  "score": score.name, "definition": score.definition, "version": LABEL_FREE_VERSION}
        config_digest = digest(config)
        identity = digest({"config": config_digest, "evaluation": evaluation})
        classifier_id = score.name if feature == model.lowshot_feature else f"{score.name}@{feature}"
        path = record_path(ctx.results, model.info.name, task.name, LABEL_FREE, 1, classifier_id, config_digest)
        ctx.configs.add(config_digest)
        plan.label_free[score.name] = PlannedRecord(path, classifier_id, {
            "config": config, "config_digest": config_digest, "identity": identity,
            "data_fingerprint": {"evaluation": evaluation}})
        if not ctx.is_done(path, identity):
            plan.label_free_pending.append(score.name)
