"""Cross-validated choice of the logistic-regression λ on the labelled (training) subset only."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .arrays import to_numpy
from .logistic import DEFAULT_LAMBDA, LogisticRegression


def select_lambda(X: Any, y: Any, lambdas, n_folds: int = 3, seed: int = 0, multilabel: bool = False,
                  mask: Any = None, default: float = DEFAULT_LAMBDA, **fit_kwargs):
    """Pick λ by ``n_folds``-fold cross-validation on the labelled (training) set only.

    Returns ``(best_lambda, {λ: mean CV score})``. Score: accuracy (multiclass) or mAP over classes
    with positives in the held-out fold (multilabel). Each λ is used as the *total* λ of a fit on
    the fold's training part (so the penalty there is λ/N_fold, as in the full fit). Ties go to the
    larger λ. Deterministic for a given ``seed``.

    Folds:
      * multiclass, every class has >= ``n_folds`` samples: stratified folds;
      * multiclass, fewer (1 or 2 images per class): plain shuffled folds over samples, and a
        held-out sample is scored only if its class also appears in that fold's training part (a
        classifier cannot predict an unseen class). With 1 image per class no held-out sample is
        scorable: then no selection is possible and ``default`` (the literature value) is
        returned, with a ``UserWarning`` saying so and NaN scores;
      * multilabel: shuffled folds over samples (``mask`` respected in fitting and scoring).
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    lambdas = [float(l) for l in lambdas]
    if not lambdas:
        raise ValueError("lambdas is empty")
    Xt = X if isinstance(X, torch.Tensor) else np.asarray(X)
    y_np = to_numpy(y)
    n = y_np.shape[0]
    if n_folds < 2 or n < n_folds:
        raise ValueError(f"need n_folds >= 2 and at least n_folds samples (n={n}, n_folds={n_folds})")
    mask_np = None if mask is None else to_numpy(mask).astype(bool)

    if multilabel:
        splits = list(KFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n)))
    else:
        y_np = y_np.reshape(-1)
        _, counts = np.unique(y_np, return_counts=True)
        if counts.min() >= n_folds:
            splits = list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n), y_np))
        else:
            splits = []
            for tr, te in KFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n)):
                te = te[np.isin(y_np[te], y_np[tr])]
                if len(te) and len(np.unique(y_np[tr])) >= 2:
                    splits.append((tr, te))
            if not splits:
                warnings.warn(
                    f"select_lambda: no held-out sample has its class in the training part of any "
                    f"fold (min {counts.min()} sample(s) per class); cannot cross-validate, "
                    f"returning the default lambda {default:g}", UserWarning, stacklevel=2)
                return default, {l: float("nan") for l in lambdas}

    def rows(a, i):
        return a[torch.as_tensor(i, device=a.device)] if isinstance(a, torch.Tensor) else a[i]

    scores = {}
    for lam in lambdas:
        fold_scores = []
        for tr, te in splits:
            clf = LogisticRegression(lambd=lam, multilabel=multilabel, **fit_kwargs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                clf.fit(rows(Xt, tr), y_np[tr], mask=None if mask_np is None else mask_np[tr])
            fold_scores.append(clf.score(rows(Xt, te), y_np[te], None if mask_np is None else mask_np[te]))
        scores[lam] = float(np.nanmean(fold_scores))
    best = max(lambdas, key=lambda l: (-math.inf if math.isnan(scores[l]) else scores[l], l))
    return best, scores


@dataclass(frozen=True)
class LambdaPolicy:
    """How a task chooses the logistic-regression λ: a literature value per kind of setting, or 3-fold
    cross-validation on the labelled subset (by default, or when the user asks for it with `--lambd cv`).
    The evaluation set never chooses anything."""
    literature: dict  # setting kind ("shots", "fraction", "full") -> λ
    source: str  # where the literature values come from (recorded)
    grid: tuple[float, ...]  # candidates of the cross-validation
    cross_validate: bool = False  # the task's default; `--lambd cv` forces it, a number replaces it
    folds: int = 3

    def default(self, kind: str) -> float:
        return self.literature.get(kind, DEFAULT_LAMBDA)


def choose_lambda(policy: LambdaPolicy, kind: str, X, y, mask=None, requested: float | str | None = None,
                  multilabel: bool = False) -> tuple[float, str]:
    """(λ, how it was chosen) for one fit on the labelled subset `X`, `y` of a setting of kind `kind`."""
    if requested not in (None, "cv"):
        return float(requested), "given by the user"
    default = policy.default(kind)
    if requested != "cv" and not policy.cross_validate:
        return default, f"literature default ({policy.source})"
    if len(X) < 2 * policy.folds:
        return default, f"default {default}: {len(X)} labelled image(s) are too few for {policy.folds}-fold CV"
    if not multilabel and np.unique(to_numpy(y), return_counts=True)[1].max() < 2:
        return default, (f"literature default {default} ({policy.source}): with one labelled image per class no "
                         "held-out image has a class its fold's fit has seen, so λ cannot be cross-validated")
    best, scores = select_lambda(X, y, policy.grid, n_folds=policy.folds, seed=0, multilabel=multilabel,
                                 mask=mask, default=default)
    what = "mAP" if multilabel else "accuracy"
    return best, (f"{policy.folds}-fold cross-validation ({what}) on the labelled subset over {list(policy.grid)}: "
                  + ", ".join(f"{k}: {v:.2f}" for k, v in scores.items()))
