"""Label-free scores of a representation (RankMe, α-ReQ; `tasks.spectrum`) on the evaluation features of every
feature-vector task that ran: read from the feature cache, no label, no fit; one record each, like any other.

A record: task = the task whose evaluation images were embedded, family `label-free`, setting `label-free`, seed 1,
classifier `rankme` or `alpha-req` (`@<feature>` under `--feature`), main score `rankme` / `alpha_req`. Its
identity is the model's configuration, the task's evaluation set (names, sizes, modification times), transform,
feature and the score's definition, so a rerun computes nothing and any change recomputes. They run unless
`--setting` or `--classifier` narrow the run (`--setting label-free` asks for them alone).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lowshot.model_zoo.files import digest
from lowshot.tasks import spectrum
from lowshot.tasks.base import FeatureVectorTask

from .records import record_path

FAMILY = SETTING = "label-free"
SCORES = {  # classifier id -> (main score, definition recorded in the identity, function -> metrics)
    "rankme": ("rankme", {"eps": spectrum.RANKME_EPS, "matrix": "features as cached"},
               lambda z: {"rankme": spectrum.rankme(z)}),
    "alpha-req": ("alpha_req", {"relative_floor": spectrum.ALPHA_REQ_RELATIVE_FLOOR, "fit": "log-log least squares",
                                "matrix": "covariance of the features as cached"},
                  lambda z: dict(zip(("alpha_req", "eigenvalues_fitted"), spectrum.alpha_req(z)))),
}
VERSION = 1


def wanted(ctx) -> bool:
    if ctx.settings is not None:
        return SETTING in ctx.settings
    return ctx.classifiers is None


def score_representation(model, task, ctx) -> list[Path]:
    """The label-free records of `model` on `task`'s evaluation set that are missing (none for tasks without one
    feature vector per image, e.g. segmentation, whose evaluation features are never stored)."""
    if not isinstance(task, FeatureVectorTask) or not wanted(ctx) or ctx.extract_only:
        return []
    feature = ctx.feature_for(model, "logreg")  # the model's low-shot feature, or --feature
    source, indices = task.evaluation_set()
    evaluation = {"dataset": source.identity, "images": source.fingerprint(indices)}
    pending = {}
    for name, (main_score, definition, _) in SCORES.items():
        config = {"model": ctx.model_config(model), "task": task.name, "dataset": task.data.dataset,
                  "evaluation_set": source.identity, "feature": feature, "geometry": task.geometry(model),
                  "score": name, "definition": definition, "version": VERSION}
        config_digest = digest(config)
        identity = digest({"config": config_digest, "evaluation": evaluation})
        cid = name if feature == model.lowshot_feature else f"{name}@{feature}"
        path = record_path(ctx.results, model.info.name, task.name, SETTING, 1, cid, config_digest)
        ctx.configs.add(config_digest)
        if not ctx.is_done(path, identity):
            pending[name] = path, cid, {"config": config, "config_digest": config_digest, "identity": identity,
                                        "data_fingerprint": {"evaluation": evaluation}}
    if not pending:
        return []
    z = np.asarray(task.evaluation_features(model, ctx, [feature])[feature])
    written = []
    for name, (path, cid, identity) in pending.items():
        main_score, _, compute = SCORES[name]
        fields = {"dataset": task.data.dataset, "feature": feature, "num_test": len(z), "dimension": int(z.shape[1]),
                  "hyperparameters_chosen_by": "none: no label, no fit", **identity}
        written.append(ctx.write_scores(path, model, task.name, FAMILY, main_score, SETTING, 1, cid, compute(z),
                                        fields))
    return written
