"""Cross-validated choice of the logistic-regression λ on the labelled (training) subset only."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .arrays import resolve_device, to_numpy, to_tensor
from .logistic import DEFAULT_LAMBDA, LogisticRegression, batch_losses, multilabel_score
from .newton import newton_cg, principal_axes
from .solver import threads_for


def select_lambda(X: Any, y: Any, lambdas, n_folds: int = 3, seed: int = 0, multilabel: bool = False,
                  mask: Any = None, default: float = DEFAULT_LAMBDA, extend: int = 0, **fit_kwargs):
    """Pick λ by ``n_folds``-fold cross-validation on the labelled (training) set only.

    Returns ``(best_lambda, {λ: mean CV score})``. Score: accuracy (multiclass) or mAP over classes
    with positives in the held-out fold (multilabel). Each λ is used as the *total* λ of a fit on
    the fold's training part (so the penalty there is λ/N_fold, as in the full fit). Ties go to the
    larger λ. Deterministic for a given ``seed``.

    ``extend``: when the best λ is an edge of the grid (the smallest, or the largest with a score above every
    other), try λ/10 (or 10 λ) too, at most ``extend`` times per run: the optimum may lie past the grid. The
    added values appear in the returned scores.

    The fits of every (λ, fold) are solved together when they are small (``LogisticRegression.uses_newton``):
    one batched Newton-CG solve in which the folds are row masks over the same X (:func:`newton.newton_cg`),
    with the same objectives and stopping rule as separate fits; larger ones are fit one after another.

    Folds:
      * multiclass, every class has >= ``n_folds`` samples: stratified folds;
      * multiclass, fewer (1 or 2 images per class): plain shuffled folds over samples, and a
        held-out sample is scored only if its class also appears in that fold's training part (a
        classifier cannot predict an unseen class). With 1 image per class no held-out sample is
        scorable: then no selection is possible and ``default`` (the literature value) is
        returned, with a ``UserWarning`` saying so and NaN scores;
      * multilabel: shuffled folds over samples (``mask`` respected in fitting and scoring).
    """
    lambdas = [float(l) for l in lambdas]
    if not lambdas:
        raise ValueError("lambdas is empty")
    Xt = X if isinstance(X, torch.Tensor) else np.asarray(X)
    y_np = to_numpy(y)
    n = y_np.shape[0]
    if n_folds < 2 or n < n_folds:
        raise ValueError(f"need n_folds >= 2 and at least n_folds samples (n={n}, n_folds={n_folds})")
    mask_np = None if mask is None else to_numpy(mask).astype(bool)

    splits = cv_splits(y_np, n_folds, seed, multilabel)
    if not splits:
        warnings.warn(
            f"select_lambda: no held-out sample has its class in the training part of any fold (min "
            f"{np.unique(y_np, return_counts=True)[1].min()} sample(s) per class); cannot cross-validate, "
            f"returning the default lambda {default:g}", UserWarning, stacklevel=2)
        return default, {l: float("nan") for l in lambdas}
    if not multilabel:
        y_np = y_np.reshape(-1)

    n_classes = y_np.shape[1] if multilabel else len(np.unique(y_np))
    probe = LogisticRegression(multilabel=multilabel, **fit_kwargs)
    if probe.uses_newton(max(len(tr) for tr, _ in splits), Xt.shape[1], n_classes):
        grid = BatchedFolds(Xt, y_np, mask_np, splits, multilabel, probe)
    else:
        grid = SeparateFolds(Xt, y_np, mask_np, splits, multilabel, fit_kwargs)
    scores = grid.scores(lambdas)
    for _ in range(extend):
        beyond = _past_the_edge(scores)
        if beyond is None:
            break
        scores.update(grid.scores([beyond[0]], warm_from=beyond[1]))
    return _best(scores), scores


def cv_splits(y: np.ndarray, n_folds: int, seed: int, multilabel: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (training rows, held-out rows) of each fold (see :func:`select_lambda`); [] when no held-out sample
    can be scored."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = y.shape[0]
    if multilabel:
        return list(KFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n)))
    y = y.reshape(-1)
    if np.unique(y, return_counts=True)[1].min() >= n_folds:
        return list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n), y))
    splits = []
    for tr, te in KFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n)):
        te = te[np.isin(y[te], y[tr])]
        if len(te) and len(np.unique(y[tr])) >= 2:
            splits.append((tr, te))
    return splits


def _best(scores: dict) -> float:
    return max(scores, key=lambda l: (-math.inf if math.isnan(scores[l]) else scores[l], l))


def _past_the_edge(scores: dict) -> tuple[float, float] | None:
    """(the next λ past the grid's edge, the edge) when the best λ is an edge: the smallest (ties go to the larger
    λ, so it won outright), or the largest with a score above every other; else None."""
    best, ordered = _best(scores), sorted(scores)
    if math.isnan(scores[best]) or len(ordered) < 2:
        return None
    if best == ordered[0]:
        return float(f"{best / 10:.6g}"), best      # 2.5e-07, not 2.5000000000000004e-07
    if best == ordered[-1] and all(scores[l] < scores[best] for l in ordered[:-1]):
        return float(f"{best * 10:.6g}"), best
    return None


def _rows(a, i):
    return a[torch.as_tensor(i, device=a.device)] if isinstance(a, torch.Tensor) else a[i]


class SeparateFolds:
    """Cross-validation scores from one fit per (λ, fold), one after another (problems too large to batch)."""

    def __init__(self, X, y, mask, splits, multilabel, fit_kwargs):
        self.X, self.y, self.mask, self.splits = X, y, mask, splits
        self.multilabel, self.fit_kwargs = multilabel, fit_kwargs

    def scores(self, lambdas, warm_from=None) -> dict:
        out = {}
        for lam in lambdas:
            fold_scores = []
            for tr, te in self.splits:
                clf = LogisticRegression(lambd=lam, multilabel=self.multilabel, **self.fit_kwargs)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    clf.fit(_rows(self.X, tr), self.y[tr], mask=None if self.mask is None else self.mask[tr])
                fold_scores.append(clf.score(_rows(self.X, te), self.y[te],
                                             None if self.mask is None else self.mask[te]))
            out[lam] = float(np.nanmean(fold_scores))
        return out


class BatchedFolds:
    """Cross-validation scores from one batched Newton-CG solve of every (λ, fold): the folds are row weights over
    the same X, so each product with X is one matmul for all problems. The solutions are kept by (λ, fold) as warm
    starts for a λ added past the grid's edge."""

    def __init__(self, X, y, mask, splits, multilabel, probe: LogisticRegression):
        self.X = to_tensor(X, resolve_device(probe.device, X), torch.float64).contiguous()
        if not bool(torch.isfinite(self.X).all()):
            raise ValueError("X contains NaN/inf")
        self.y, self.mask, self.splits, self.multilabel, self.probe = y, mask, splits, multilabel, probe
        self.targets = probe._problem(self.X, y, mask, torch.float64)[2]
        with threads_for(self.X.numel() * len(probe.classes_), self.X.device):   # as the solves run
            self.axes = principal_axes(self.X)   # once for the grid and every λ added past its edge
        self.solutions: dict[float, torch.Tensor] = {}   # λ -> W [D, folds, C]
        self.info: list[dict] = []

    def scores(self, lambdas, warm_from=None) -> dict:
        dev, f64 = self.X.device, torch.float64
        n, d = self.X.shape
        problems = [(lam, fold) for lam in lambdas for fold in range(len(self.splits))]
        weights = torch.zeros(n, len(problems), dtype=f64, device=dev)
        regs = torch.empty(len(problems), dtype=f64, device=dev)
        for k, (lam, fold) in enumerate(problems):
            tr = torch.as_tensor(self.splits[fold][0], device=dev)
            weights[tr, k] = 1.0 / len(tr)
            regs[k] = lam / len(tr)
        present = None
        if not self.multilabel:
            y_idx, n_cls = self.targets[1].cpu().numpy(), self.targets[2]
            present = torch.zeros(len(problems), n_cls, dtype=torch.bool, device=dev)
            for k, (_, fold) in enumerate(problems):
                present[k, np.unique(y_idx[self.splits[fold][0]])] = True
        c = len(self.probe.classes_)
        if warm_from is None:
            W = torch.zeros(d, len(problems), c, dtype=f64, device=dev)
        else:
            W = torch.cat([self.solutions[warm_from]] * len(lambdas), dim=1).clone()
        with threads_for(n * d * c, dev):   # the per-problem size: the batch's [N, K, C] operations are as small
            self.info += newton_cg(self.X, W, batch_losses(self.targets, weights, present), regs,
                                   self.probe.tol, self.probe.max_iter, axes=self.axes)
            out = {}
            for i, lam in enumerate(lambdas):
                folds = range(i * len(self.splits), (i + 1) * len(self.splits))
                self.solutions[lam] = W[:, list(folds)]
                out[lam] = float(np.nanmean([self._score(W[:, k], problems[k][1],
                                                         None if present is None else present[k]) for k in folds]))
        return out

    def _score(self, W: torch.Tensor, fold: int, present: torch.Tensor | None) -> float:
        te = self.splits[fold][1]
        logits = _rows(self.X, te) @ W
        if self.multilabel:
            return multilabel_score(to_numpy(logits), self.y[te], None if self.mask is None else self.mask[te])
        logits = logits.masked_fill(~present, -torch.inf)   # a fold's fit predicts only the classes it saw
        pred = to_numpy(logits.argmax(dim=1))
        return float(np.mean(self.probe.classes_[pred] == self.y[te]))


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
    # when the cross-validation picks an edge of the grid, λ/10 (or 10 λ) is tried past it, at most this many times
    extend: int = 3

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
                                 mask=mask, default=default, extend=policy.extend)
    what = "mAP" if multilabel else "accuracy"
    added = [l for l in scores if l not in policy.grid]
    extended = (f"; the best was an edge of the grid, so it was extended past it to {added}" if added else "")
    return best, (f"{policy.folds}-fold cross-validation ({what}) on the labelled subset over {list(policy.grid)}"
                  f"{extended}: " + ", ".join(f"{k:g}: {v:.2f}" for k, v in scores.items()))
