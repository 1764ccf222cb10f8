"""The classifiers tasks run, by name: which labels each fits, what it reads, how it prepares features, how its
hyper-parameters are chosen, and its fit. A task family runs every classifier whose `fits` names the family's
kind of labels (`classifiers_for`; `LowShotTask.classifiers`); the CLI's `--classifier` choices, the records'
classifier ids and the tables' columns come from here too, so a new classifier is one entry here plus its
estimator.

Feature-vector classifiers (`fits` single-label and/or multi-label): `fit(X, y, mask=..., policy=..., kind=...,
requested_lambd=..., device=...)` takes prepared training features and returns `(estimator, record fields)`; the
estimator scores prepared evaluation features (`predict`, `predict_proba` for multi-label). The segmentation head
(`fits` dense) is trained on token features and masks by the segmentation family itself
(`linear_head.fit_linear_head`): its entry declares what it reads and its rule, and has no `fit`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from lowshot.model_zoo.errors import UnknownNameError

from .knn import KNNClassifier
from .linear_head import HEAD_PROTOCOL
from .logistic import NEWTON_MAX_SIZE, LogisticRegression, preprocess
from .selection import choose_lambda


LABEL_KINDS = ("single-label", "multi-label", "dense")


@dataclass(frozen=True)
class ClassifierSpec:
    name: str
    fits: tuple[str, ...]  # the kinds of labels it fits (LABEL_KINDS): which task families run it
    feature: Callable  # the model's EvalConfig -> the feature this classifier reads by default
    preprocessing: str  # what is done to the features before the fit (recorded)
    prepare: Callable | None  # raw features -> estimator inputs (training and evaluation alike)
    fit: Callable | None  # (X, y, ...) -> (estimator, record fields); None: the family trains it (dense heads)
    # (task, run context) -> what decides its numbers besides the data and the features: part of every record's
    # identity, so a rerun under another rule never reports an old number
    rule: Callable = lambda task, ctx: {}
    # run context -> how a user's choice shows in the record's classifier id (e.g. "λ=cv"), "" when none
    variant: Callable = lambda ctx: ""


def _fit_logreg(X, y, mask=None, policy=None, kind="shots", requested_lambd=None, device="cpu"):
    multilabel = getattr(y, "ndim", 1) == 2
    lambd, how = choose_lambda(policy, kind, X, y, mask, requested_lambd, multilabel)
    clf = LogisticRegression(lambd=lambd, multilabel=multilabel, device=device).fit(X, y, mask=mask)
    return clf, {"hyperparameters": {"lambd": lambd, "lambd_over_n": lambd / len(X)},
                 "hyperparameters_chosen_by": how, "convergence": clf.convergence_info()}


def _fit_knn(X, y, mask=None, policy=None, kind="shots", requested_lambd=None, device="cpu"):
    knn = KNNClassifier(device=device).fit(X, y)  # its defaults are DINO eval_knn.py's
    return knn, {"hyperparameters": {"k": knn.k, "temperature": knn.temperature},
                 "hyperparameters_chosen_by": "DINO eval_knn defaults"}


def _identity(X):
    return X


def _logreg_rule(task, ctx) -> dict:
    solver = LogisticRegression()
    return {"lambda_policy": asdict(task.lambda_policy), "lambd": ctx.lambd,
            "solver": {"tol": solver.tol, "max_iter": solver.max_iter, "dtype": str(solver.dtype),
                       "method": solver.solver, "newton_max_size": NEWTON_MAX_SIZE}}


def _knn_rule(task, ctx) -> dict:
    knn = KNNClassifier()
    return {"k": knn.k, "temperature": knn.temperature}


def _linear_rule(task, ctx) -> dict:
    return {"lr_grid": list(task.lr_grid), "min_steps": task.min_steps, "max_steps": task.max_steps,
            "steps": task.steps, "head": HEAD_PROTOCOL}


CLASSIFIERS: dict[str, ClassifierSpec] = {c.name: c for c in [
    # L2 logistic regression, no intercept, λ/N (cyanure's objective), torch L-BFGS; λ: the task's literature
    # value, or 3-fold cross-validation on the labelled subset
    ClassifierSpec("logreg", ("single-label", "multi-label"), lambda config: config.lowshot_feature,
                   "per-sample centring + L2", preprocess, _fit_logreg, _logreg_rule,
                   lambda ctx: "" if ctx.lambd is None else f"λ={ctx.lambd}"),
    # DINO's weighted k-NN: cosine, k = 20, T = 0.07, votes exp(sim / T) (eval_knn.py's defaults)
    ClassifierSpec("knn", ("single-label",), lambda config: config.knn_feature, "L2", _identity, _fit_knn,
                   _knn_rule),
    # segmentation head: BatchNorm + 1x1 convolution on patch tokens, AdamW; learning rate by held-out mIoU on
    # 20 % of the labelled subset
    ClassifierSpec("linear", ("dense",), lambda config: "patch", "none (BatchNorm in the head)", None, None,
                   _linear_rule),
]}


def classifiers_for(label_kind: str) -> tuple[str, ...]:
    """The registered classifiers that fit `label_kind` labels, in registry order."""
    if label_kind not in LABEL_KINDS:
        raise ValueError(f"unknown kind of labels {label_kind!r}; known: {', '.join(LABEL_KINDS)}")
    return tuple(name for name, spec in CLASSIFIERS.items() if label_kind in spec.fits)


def get_classifier(name: str) -> ClassifierSpec:
    try:
        return CLASSIFIERS[name]
    except KeyError:
        raise UnknownNameError(f"unknown classifier {name!r}; known: {', '.join(CLASSIFIERS)}") from None
