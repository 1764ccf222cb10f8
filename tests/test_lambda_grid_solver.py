"""The λ grid and its folds in one batched Newton-CG solve, few-shot fits that converge, the grid extended past an
edge the cross-validation picks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lowshot.tasks.classifiers import LambdaPolicy, LogisticRegression, choose_lambda, preprocess, select_lambda
from lowshot.tasks.classifiers.newton import principal_axes
from lowshot.tasks.classifiers.selection import BatchedFolds, cv_splits

GRID = (0.00025, 0.0025, 0.025, 0.25, 2.5)
EXACT = {"solver": "lbfgs", "dtype": torch.float64, "tol": 1e-9, "max_iter": 100_000}  # the other solver, tight


def badly_conditioned(n, dim, classes, noise, decay, seed):
    """Few-shot features with a decaying spectrum, like a backbone's (a few strong directions, a long tail)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, dim))
    y = np.arange(n) % classes
    X = (means[y] + noise * rng.standard_normal((n, dim))) * np.arange(1, dim + 1) ** -decay
    return preprocess(X.astype(np.float32)), y


def multilabel_problem(n=60, dim=64, classes=20, seed=5):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, dim))
    Y = (rng.random((n, classes)) < 0.15).astype(np.float32)
    Y[np.arange(n), rng.integers(0, classes, n)] = 1
    mask = rng.random((n, classes)) > 0.05  # a few 'difficult' entries
    return preprocess((Y @ means + 2.0 * rng.standard_normal((n, dim))).astype(np.float32)), Y, mask


@pytest.mark.parametrize("case", ["2 shots", "5 shots", "multilabel"])
def test_the_batched_grid_equals_separate_fits(case):
    """5 λ x 3 folds in one solve: every (λ, fold) reaches the objective of its own fit (the other solver, L-BFGS
    in float64 at tol 1e-9) to 1e-6, so the scores and the chosen λ are those of separate fits. With 2 shots
    some folds' training parts lack classes: their fit knows only the classes it saw."""
    mask = None
    if case == "multilabel":
        X, y, mask = multilabel_problem()
    else:
        X, y = badly_conditioned(20 if case == "2 shots" else 50, 48, 10, 2.0, 1.0, seed=3)
    multilabel = case == "multilabel"
    splits = cv_splits(y, 3, 0, multilabel)
    assert len(splits) == 3
    if case == "2 shots":
        assert any(len(np.unique(y[tr])) < 10 for tr, _ in splits)
    batched = BatchedFolds(X, y, mask, splits, multilabel, LogisticRegression(multilabel=multilabel))
    scores = batched.scores(GRID)
    assert len(batched.info) == 15 and all(i["status"] == "converged" for i in batched.info)
    separate = {lam: [] for lam in GRID}
    for k, info in enumerate(batched.info):
        lam, (tr, te) = GRID[k // 3], splits[k % 3]
        alone = LogisticRegression(lambd=lam, multilabel=multilabel, **EXACT).fit(
            X[tr], y[tr], mask=None if mask is None else mask[tr])
        assert info["objective"] == pytest.approx(alone.objective_, rel=1e-6), (lam, k % 3)
        separate[lam].append(alone.score(X[te], y[te], None if mask is None else mask[te]))
    assert scores == pytest.approx({lam: np.mean(v) for lam, v in separate.items()}, abs=1e-9)
    best = max(GRID, key=lambda lam: (scores[lam], lam))
    assert select_lambda(X, y, GRID, multilabel=multilabel, mask=mask) == (best, scores)


def test_a_nearly_separable_few_shot_fit_converges(monkeypatch):
    """16 shots x 10 classes, 96 dims, λ = 2.5e-4 (λ/N = 1.6e-6): plain L-BFGS (the solver every fit used before)
    stops at max_iter 1000; the default solver (Newton-CG for problems this small) converges, to the exact minimum,
    and so does L-BFGS in the features' preconditioned coordinates (the solver of larger problems)."""
    from lowshot.tasks.classifiers import logistic

    X, y = badly_conditioned(160, 96, 10, 3.0, 2.0, seed=0)
    exact = LogisticRegression(lambd=2.5e-4, solver="newton", tol=1e-12).fit(X, y)
    preconditioned = LogisticRegression(lambd=2.5e-4, solver="lbfgs").fit(X, y)
    assert preconditioned.converged_ and preconditioned.n_iter_ < 300  # 162 when written
    assert preconditioned.objective_ == pytest.approx(exact.objective_, rel=1e-6)
    with monkeypatch.context() as plain:
        plain.setattr(logistic, "feature_preconditioner", lambda X: None)
        with pytest.warns(RuntimeWarning, match="max_iter reached"):
            lbfgs = LogisticRegression(lambd=2.5e-4, solver="lbfgs").fit(X, y)
    assert lbfgs.stop_reason_ == "max_iter" and lbfgs.n_iter_ == 1000
    fit = LogisticRegression(lambd=2.5e-4).fit(X, y)
    assert fit.converged_ and fit.solver_ == "newton-cg" and fit.n_iter_ < 50
    assert fit.convergence_info()["solver"] == "newton-cg" and fit.rel_grad_norm_ <= 1e-6
    assert fit.objective_ == pytest.approx(exact.objective_, rel=1e-9)
    assert np.abs(fit.coef_ - exact.coef_).max() <= 1e-3 * np.abs(exact.coef_).max()


def test_the_grid_extends_past_the_edge_cross_validation_picks():
    """The smallest λ of the grid wins: λ/10 is tried, and again while the new edge wins (at most 3 times); the
    record's note lists the added values. Here 2.5e-6 wins, two decades below the grid."""
    X, y = badly_conditioned(60, 32, 10, 3.0, 1.5, seed=0)
    policy = LambdaPolicy({}, "test", GRID, cross_validate=True)
    lambd, how = choose_lambda(policy, "shots", X, y)
    assert lambd == 2.5e-06
    assert "extended past it to [2.5e-05, 2.5e-06, 2.5e-07]" in how and "2.5e-07: " in how
    best, scores = select_lambda(X, y, GRID)  # the grid alone
    assert best == GRID[0] and scores[GRID[0]] < 0.2 < 0.21 < float(how.split("2.5e-06: ")[1][:4])


def test_the_softmax_solution_has_no_component_along_its_flat_directions():
    """Adding the same vector to every class's weights leaves the cross-entropy unchanged, so the penalised optimum
    has W 1 = 0, and there the Hessian's only curvature is λ/N. A nearly separable problem at λ = 2.5e-7 (the edge
    the grid extends to): the fit converges with class sums at rounding level, in few matmuls. The solver before the
    projection off that direction left class sums of 1e-2 of the weights and took 1,677 matmuls (measured)."""
    X, y = badly_conditioned(240, 96, 12, 3.0, 1.0, seed=0)
    fit = LogisticRegression(lambd=2.5e-7).fit(X, y)
    assert fit.converged_ and fit.solver_ == "newton-cg"
    assert np.abs(fit.coef_.sum(axis=1)).max() <= 1e-12 * np.abs(fit.coef_).max()
    assert fit.n_matmul_ <= 800, fit.n_matmul_


def test_the_principal_axes_are_an_orthonormal_basis_of_the_rows():
    """The solve runs on X V: V must have orthonormal columns spanning X's rows (then X V V^T = X), with N < D (a
    rank-deficient X: repeated rows) and N > D."""
    rng = np.random.default_rng(0)
    for n, d in ((40, 96), (200, 32)):
        X = torch.as_tensor(rng.standard_normal((n, d)), dtype=torch.float64)
        X[1] = X[0]
        F, V = principal_axes(X)
        assert V.shape == (d, min(n, d))
        assert torch.allclose(V.T @ V, torch.eye(min(n, d), dtype=torch.float64), atol=1e-12)
        assert torch.allclose(F @ V.T, X, atol=1e-12) and torch.allclose(F, X @ V)
        norms = torch.linalg.vector_norm(F, dim=0)
        assert bool((norms[:-1] >= norms[1:] - 1e-9).all())   # largest first: QR orthonormalises the weakest last
