"""Tests for tasks/classifiers.py (preprocess, LogisticRegression, select_lambda, KNNClassifier).

cyanure is only ever run in a subprocess: it ships its own OpenBLAS/OpenMP, and after one cyanure
fit torch's CPU bf16 matmul returns NaN in the same process.
"""

import inspect
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from lowshot.tasks.classifiers import KNNClassifier, LogisticRegression, preprocess, select_lambda


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The problems here are tiny: thread wake-ups cost more than they bring, and on a shared
    machine they cost milliseconds per op. Run this module single-threaded (torch and the
    BLAS/OpenMP pools), then restore the settings."""
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # numpy/scipy/sklearn BLAS too
        yield
    torch.set_num_threads(n)


def _lowshot_problem(n_classes=150, per_class=5, n_test_per_class=20, dim=96, noise=1.2, seed=0):
    """Gaussian class means + isotropic noise, preprocessed; separate test set."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((n_classes, dim)) / np.sqrt(dim)

    def draw(per):
        y = np.repeat(np.arange(n_classes), per)
        X = means[y] + noise * rng.standard_normal((len(y), dim)) / np.sqrt(dim)
        return preprocess(X), y

    Xtr, ytr = draw(per_class)
    Xte, yte = draw(n_test_per_class)
    return Xtr, ytr, Xte, yte


def _objective(W, X, y, lambd):
    """Float64 reference objective: mean CE + (lambd/N)/2 ||W||²."""
    X, W = np.asarray(X, np.float64), np.asarray(W, np.float64)
    Z = X @ W
    Z -= Z.max(1, keepdims=True)
    lse = np.log(np.exp(Z).sum(1))
    n = len(X)
    return float(np.mean(lse - Z[np.arange(n), y]) + 0.5 * lambd / n * (W ** 2).sum())


# ------------------------------------------------------------------------------ preprocess
def test_preprocess_numpy_rows_centred_unit_norm():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 16)) * 5 + 3
    Xp = preprocess(X)
    assert isinstance(Xp, np.ndarray) and Xp.dtype == np.float32
    np.testing.assert_allclose(Xp.mean(1), 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(Xp, axis=1), 1, atol=1e-5)
    assert not np.shares_memory(Xp, X)
    # same as MSN's cyanure preprocessing done by hand
    Xc = X - X.mean(1, keepdims=True)
    np.testing.assert_allclose(Xp, Xc / np.linalg.norm(Xc, axis=1, keepdims=True), atol=1e-6)


def test_preprocess_torch_keeps_dtype_and_device():
    X = torch.randn(20, 8, dtype=torch.float64) + 2
    Xp = preprocess(X)
    assert isinstance(Xp, torch.Tensor) and Xp.dtype == torch.float64 and Xp.device == X.device
    assert float(Xp.mean(1).abs().max()) < 1e-12
    assert float((Xp.norm(dim=1) - 1).abs().max()) < 1e-12
    Xh = preprocess(torch.randn(4, 8).to(torch.bfloat16))
    assert Xh.dtype == torch.bfloat16
    # constant row: zero after centring, stays zero instead of NaN
    Xz = preprocess(torch.ones(2, 5))
    assert torch.equal(Xz, torch.zeros(2, 5))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_preprocess_rejects_non_finite(bad):
    X = np.ones((5, 4))
    X[1, 2] = bad
    X[3, 0] = bad
    with pytest.raises(ValueError, match="NaN/inf in 2 rows"):
        preprocess(X)
    with pytest.raises(ValueError, match="NaN/inf in 2 rows"):
        preprocess(torch.from_numpy(X))


# ------------------------------------------------------------------------------ logistic regression
@pytest.mark.parametrize("solver", ["auto", "lbfgs"])  # small: auto is Newton-CG in float64; L-BFGS in float32
def test_logreg_reaches_reference_optimum(solver):
    """Same objective value as a tight float64 scipy L-BFGS-B solve of the documented objective."""
    from scipy.optimize import minimize

    Xtr, ytr, _, _ = _lowshot_problem(n_classes=20, per_class=10, dim=32, seed=1)
    n, d, c = len(Xtr), Xtr.shape[1], 20
    lambd = 0.5  # λ/N = 2.5e-3
    X64, onehot = Xtr.astype(np.float64), np.eye(c)[ytr]

    def fun(w):
        W = w.reshape(d, c)
        Z = X64 @ W
        Z -= Z.max(1, keepdims=True)
        P = np.exp(Z)
        s = P.sum(1, keepdims=True)
        P /= s
        f = np.mean(np.log(s[:, 0]) - Z[np.arange(n), ytr]) + 0.5 * lambd / n * (W ** 2).sum()
        return f, (X64.T @ (P - onehot) / n + lambd / n * W).ravel()

    ref = minimize(fun, np.zeros(d * c), jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "gtol": 1e-12, "ftol": 1e-15})
    clf = LogisticRegression(lambd=lambd, tol=1e-5, solver=solver).fit(Xtr, ytr)
    assert clf.converged_
    ours = _objective(clf.coef_, Xtr, ytr, lambd)
    assert abs(ours - ref.fun) / ref.fun < 1e-5, (ours, ref.fun)
    assert abs(clf.objective_ - ours) / ours < 1e-5  # reported objective is the true one
    np.testing.assert_allclose(clf.coef_, ref.x.reshape(d, c), atol=2e-3 * np.abs(ref.x).max())

    # and scikit-learn's lbfgs with matching C (its default tol would stop at once here)
    from sklearn.linear_model import LogisticRegression as SkLR

    sk = SkLR(C=1.0 / lambd, fit_intercept=False, tol=1e-8, max_iter=10000).fit(X64, ytr)
    assert abs(_objective(sk.coef_.T, Xtr, ytr, lambd) - ours) / ours < 1e-5


def test_softmax_loss_and_gradient_match_float64():
    """The L-BFGS loss on float32 logits (fused in-place softmax): sum of cross-entropies and dLoss/dZ against a
    float64 reference, with rows where the true class takes almost all the mass and rows where its probability
    underflows float32; the true-class entry -Σ_{c≠y} p_c keeps its relative precision when it is tiny."""
    from lowshot.tasks.classifiers.solver import softmax_ce_

    gen = torch.Generator().manual_seed(0)
    Z = torch.randn(400, 30, generator=gen) * 4
    y = torch.randint(0, 30, (400,), generator=gen)
    rows = torch.arange(400)
    Z[rows[:20], y[:20]] = Z[:20].amax(1) + 40          # p_y = 1 - O(e^-40): confident
    Z[rows[20:40], y[20:40]] = Z[20:40].amin(1) - 200   # p_y ~ e^-200: underflows float32
    Zd = Z.double()
    loss_ref = float((torch.logsumexp(Zd, 1) - Zd[rows, y]).sum())
    R_ref = torch.softmax(Zd, 1)
    R_ref[rows, y] = -R_ref.masked_fill(torch.nn.functional.one_hot(y, 30).bool(), 0).sum(1)  # -Σ_{c≠y} p_c
    loss, R = softmax_ce_(Z.clone(), y)
    assert abs(loss - loss_ref) / loss_ref < 1e-6, (loss, loss_ref)
    assert float((R.double() - R_ref).abs().max()) < 1e-6
    true_entry, true_ref = R[rows[:20], y[:20]].double(), R_ref[rows[:20], y[:20]]
    assert bool((true_entry < 0).all()) and float(((true_entry - true_ref) / true_ref).abs().max()) < 1e-5


def test_rowdot_blocks_match_float64():
    from lowshot.tasks.classifiers.solver import _rowdot

    gen = torch.Generator().manual_seed(1)
    A, B = torch.randn(3000, 700, generator=gen), torch.randn(3000, 700, generator=gen)
    ref = float((A.double() * B.double()).sum())
    scale = float((A.double() * B.double()).abs().sum())
    assert abs(_rowdot(A, B) - ref) < 1e-6 * scale
    assert abs(_rowdot(A[:3], B[:3]) - float((A[:3].double() * B[:3].double()).sum())) < 1e-6 * scale


def test_lbfgs_memory_matches_two_loop_recursion():
    """H·g of the compact L-BFGS memory (ring buffer, pairs overwritten) equals the classic two-loop recursion over
    the last m pairs, both when apply computes [S'g; Y'g] and when it takes them from push's pass."""
    from lowshot.tasks.classifiers.solver import _LBFGSMemory

    gen = torch.Generator().manual_seed(2)
    p, m = 50, 4
    A = torch.randn(p, p, generator=gen, dtype=torch.float64)
    A = A @ A.T + p * torch.eye(p, dtype=torch.float64)      # a convex quadratic's Hessian: y = A s
    memory, pairs = _LBFGSMemory(m, p, torch.device("cpu")), []
    for _ in range(7):                                        # more pairs than m: the ring wraps
        s_vec = torch.randn(p, generator=gen, dtype=torch.float64)
        y_vec = A @ s_vec
        g = torch.randn(p, generator=gen, dtype=torch.float64)
        products = memory.push(s_vec, y_vec, g)
        pairs = (pairs + [(s_vec, y_vec)])[-m:]
        q, alphas = g.clone(), []
        for s_i, y_i in reversed(pairs):
            a = float(s_i @ q) / float(s_i @ y_i)
            q -= a * y_i
            alphas.append(a)
        s_n, y_n = pairs[-1]
        q *= float(s_n @ y_n) / float(y_n @ y_n)
        for (s_i, y_i), a in zip(pairs, reversed(alphas)):
            q += (a - float(y_i @ q) / float(s_i @ y_i)) * s_i
        torch.testing.assert_close(memory.apply(g), q, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(memory.apply(g, products), q, rtol=1e-10, atol=1e-12)


def test_preconditioned_lbfgs_on_a_decaying_spectrum(monkeypatch):
    """Features whose variance decays as j^-2 (a backbone's few strong directions and long tail): L-BFGS in the
    preconditioned coordinates converges in a fraction of the iterations, to the optimum of Newton-CG in float64;
    Q is (C + μI)^(-1/2) of the features' second moment C."""
    from lowshot.benchmark.perf.classifier_speed import spectrum_features
    from lowshot.tasks.classifiers import logistic
    from lowshot.tasks.classifiers.solver import feature_preconditioner

    X, y = spectrum_features(2000, 128, 20, decay=1.0)
    fit = LogisticRegression(lambd=2.5e-4, solver="lbfgs").fit(X, y)
    exact = LogisticRegression(lambd=2.5e-4, solver="newton", tol=1e-9).fit(X, y)
    assert fit.converged_ and fit.n_iter_ <= 200, fit.convergence_info()
    assert fit.objective_ == pytest.approx(exact.objective_, rel=1e-6)
    monkeypatch.setattr(logistic, "feature_preconditioner", lambda X: None)
    plain = LogisticRegression(lambd=2.5e-4, solver="lbfgs").fit(X, y)
    assert plain.n_iter_ >= 3 * fit.n_iter_, (plain.n_iter_, fit.n_iter_)  # 700 against 114 when written

    Xt = torch.as_tensor(X)
    C = (Xt.T @ Xt).double() / len(X)
    Q = feature_preconditioner(Xt)
    mu = float(torch.trace(C)) / C.shape[0]
    M = Q @ Q @ (C + mu * torch.eye(C.shape[0], dtype=torch.float64))
    torch.testing.assert_close(M, M[0, 0] * torch.eye(C.shape[0], dtype=torch.float64), rtol=0, atol=1e-9 * M[0, 0])
    assert float(Q.diagonal().mean()) == pytest.approx(1.0)
    assert feature_preconditioner(torch.zeros(5, 3)) is None
    isotropic = torch.nn.functional.normalize(torch.randn(2000, 16, generator=torch.Generator().manual_seed(0)))
    assert feature_preconditioner(isotropic) is None  # nothing to gain: plain L-BFGS


def test_logreg_float64_and_info():
    Xtr, ytr, _, _ = _lowshot_problem(n_classes=10, per_class=8, dim=16, seed=2)
    clf = LogisticRegression(lambd=0.1, tol=1e-8, dtype=torch.float64).fit(Xtr, ytr)
    info = clf.convergence_info()
    assert set(info) >= {"n_iter", "grad_norm", "objective", "converged", "tol", "max_iter"}
    assert info["converged"] and info["rel_grad_norm"] <= 1e-8 and info["n_iter"] > 0
    assert json.loads(json.dumps(info)) == info  # plain types, storable in result records
    assert clf.coef_.dtype == np.float64


def test_logreg_reports_non_convergence():
    Xtr, ytr, _, _ = _lowshot_problem(n_classes=10, per_class=8, dim=16, seed=2)
    with pytest.warns(RuntimeWarning, match="max_iter reached"):
        clf = LogisticRegression(lambd=1e-3, max_iter=3, tol=1e-6).fit(Xtr, ytr)
    assert not clf.converged_ and clf.n_iter_ == 3 and clf.rel_grad_norm_ > 1e-6


def test_logreg_arbitrary_labels_and_io_types():
    Xtr, ytr, Xte, yte = _lowshot_problem(n_classes=3, per_class=20, dim=8, seed=3)
    labels = np.array([-5, 7, 100])
    clf = LogisticRegression(lambd=0.01).fit(Xtr, labels[ytr])
    np.testing.assert_array_equal(clf.classes_, labels)
    pred = clf.predict(Xte)
    assert isinstance(pred, np.ndarray) and set(np.unique(pred)) <= set(labels)
    assert clf.score(Xte, labels[yte]) > 0.8
    proba = clf.predict_proba(Xte)
    assert isinstance(proba, np.ndarray) and proba.shape == (len(Xte), 3)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(labels[proba.argmax(1)], pred)
    # torch in -> torch out, same answers; fitting from torch gives the same model
    pt = clf.predict(torch.from_numpy(Xte))
    assert isinstance(pt, torch.Tensor) and np.array_equal(pt.numpy(), pred)
    clf_t = LogisticRegression(lambd=0.01).fit(torch.from_numpy(Xtr), torch.from_numpy(labels[ytr]))
    np.testing.assert_array_equal(clf_t.predict(Xte), pred)


def test_logreg_reproducible():
    Xtr, ytr, Xte, _ = _lowshot_problem(n_classes=30, per_class=5, dim=32, seed=4)
    a = LogisticRegression(lambd=0.0025).fit(Xtr, ytr)
    b = LogisticRegression(lambd=0.0025).fit(Xtr.copy(), ytr.copy())
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.predict(Xte), b.predict(Xte))


def test_cuda_requested_but_absent():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    X, y, _, _ = _lowshot_problem(n_classes=3, per_class=3, dim=4)
    with pytest.raises(RuntimeError, match="CUDA requested but not available"):
        LogisticRegression(device="cuda").fit(X, y)
    with pytest.raises(RuntimeError, match="CUDA requested but not available"):
        KNNClassifier(device="cuda", backend="torch").fit(X, y)


_CYANURE_SCRIPT = textwrap.dedent("""
    import importlib.util, json, sys, time
    import numpy as np
    if importlib.util.find_spec("cyanure") is None:  # not installed: the test skips; any other error fails it
        print(json.dumps({"skip": "cyanure is not installed (pip install cyanure)"}))
        sys.exit(0)
    from cyanure.data_processing import preprocess
    from cyanure.estimators import Classifier
    d, lambd, tol = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    Xraw = np.ascontiguousarray(np.load(d + "/Xraw.npy"), dtype=np.float64)
    preprocess(Xraw, centering=True, normalize=True, columns=False)  # in place, C order only
    np.save(d + "/Xcy.npy", Xraw)
    X = np.ascontiguousarray(np.load(d + "/X.npy"), dtype=np.float64)
    y = np.load(d + "/y.npy")
    clf = Classifier(loss="multiclass-logistic", penalty="l2", lambda_1=lambd / len(X),
                     fit_intercept=False, tol=tol, max_iter=300, duality_gap_interval=10,
                     verbose=False, n_threads=1)
    clf.fit(X, y)
    np.save(d + "/W.npy", clf.coef_)
    np.save(d + "/pred.npy", clf.predict(np.load(d + "/Xte.npy").astype(np.float64)))
    print(json.dumps({"n_iter": float(np.max(clf.n_iter_))}))
""")


def _run_cyanure(tmp_path, lambd, tol):
    proc = subprocess.run([sys.executable, "-c", _CYANURE_SCRIPT, str(tmp_path), str(lambd), str(tol)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    return out


def test_matches_cyanure(tmp_path):
    """Same preprocessing and same objective as MSN's cyanure probe; accuracy within 0.2 points."""
    rng = np.random.default_rng(5)
    Xtr, ytr, Xte, yte = _lowshot_problem(n_classes=150, per_class=5, n_test_per_class=20, dim=96,
                                          noise=2.0, seed=5)
    Xraw = rng.standard_normal((40, 96)) * 3 + 1
    np.save(tmp_path / "Xraw.npy", Xraw)
    np.save(tmp_path / "X.npy", Xtr)
    np.save(tmp_path / "y.npy", ytr)
    np.save(tmp_path / "Xte.npy", Xte)
    lambd = 0.75  # λ/N = 1e-3: both solvers converge
    _run_cyanure(tmp_path, lambd, tol=1e-4)

    # preprocessing agrees with cyanure's (float64 in place, per row)
    np.testing.assert_allclose(preprocess(Xraw), np.load(tmp_path / "Xcy.npy"), atol=1e-6)

    ours = LogisticRegression(lambd=lambd).fit(Xtr, ytr)
    assert ours.converged_
    W_cy, pred_cy = np.load(tmp_path / "W.npy"), np.load(tmp_path / "pred.npy")
    f_ours, f_cy = _objective(ours.coef_, Xtr, ytr, lambd), _objective(W_cy, Xtr, ytr, lambd)
    # same objective: cyanure's solution (relative duality gap 1e-4) is no better than ours
    assert abs(f_ours - f_cy) / f_cy < 2e-4, (f_ours, f_cy)
    acc_ours, acc_cy = np.mean(ours.predict(Xte) == yte), np.mean(pred_cy == yte)
    assert 0.3 < acc_cy < 0.95  # a meaningful problem, not trivial
    assert abs(acc_ours - acc_cy) <= 0.002, (acc_ours, acc_cy)


# ------------------------------------------------------------------------------ multilabel
def _multilabel_problem(n=400, dim=24, n_cls=6, seed=0):
    rng = np.random.default_rng(seed)
    W_true = rng.standard_normal((dim, n_cls)) * 4
    X = preprocess(rng.standard_normal((n, dim)))
    Z = X @ W_true + 0.3 * rng.standard_normal((n, n_cls))
    Y = (Z > np.quantile(Z, 0.7, axis=0)).astype(np.float32)  # ~30 % positives per class
    return X, Y, W_true


def test_multilabel_recovers_planted_structure():
    X, Y, W_true = _multilabel_problem(n=600)
    Xtr, Ytr, Xte, Yte = X[:400], Y[:400], X[400:], Y[400:]
    clf = LogisticRegression(lambd=0.01, multilabel=True).fit(Xtr, Ytr)
    assert clf.converged_
    assert clf.score(Xte, Yte) > 0.9
    P = clf.predict_proba(Xte)
    assert P.shape == Yte.shape and P.min() >= 0 and P.max() <= 1
    np.testing.assert_array_equal(clf.predict(Xte), (P > 0.5).astype(int))
    # learned directions align with the planted ones
    cos = np.sum(clf.coef_ * W_true, 0) / np.linalg.norm(clf.coef_, axis=0) / np.linalg.norm(W_true, axis=0)
    assert cos.min() > 0.8


def test_multilabel_mask_ignores_entries():
    X, Y, _ = _multilabel_problem(n=300, seed=1)
    rng = np.random.default_rng(1)
    mask = rng.random(Y.shape) > 0.2
    Y_flipped = np.where(mask, Y, 1 - Y)
    a = LogisticRegression(lambd=0.05, multilabel=True).fit(X, Y, mask=mask)
    b = LogisticRegression(lambd=0.05, multilabel=True).fit(X, Y_flipped, mask=mask)
    np.testing.assert_array_equal(a.coef_, b.coef_)  # masked labels have no influence at all
    c = LogisticRegression(lambd=0.05, multilabel=True).fit(X, Y_flipped)
    assert np.abs(c.coef_ - a.coef_).max() > 1e-2   # ... while without the mask they do
    # column j of the joint fit == a binary fit of class j on its unmasked samples only
    j = 2
    keep = mask[:, j]
    single = LogisticRegression(lambd=0.05, multilabel=True, tol=1e-6)  # same λ: λ/N_c vs λ/N cancels
    single.fit(X[keep], Y[keep, j:j + 1])
    joint = LogisticRegression(lambd=0.05, multilabel=True, tol=1e-6).fit(X, Y, mask=mask)
    np.testing.assert_allclose(joint.coef_[:, j], single.coef_[:, 0], atol=1e-3 * np.abs(single.coef_).max())


# ------------------------------------------------------------------------------ select_lambda
def _correlated_noise_problem(n_per_class=30, seed=0):
    """Nearest-class-mean (what a huge λ reduces to) fails; a weakly regularised fit does not.

    Two classes separated along e0 by a margin of 0.5, with large noise shared by e0 and e1: the
    mean difference points along e0, the discriminative direction is e0 - e1. A constant feature
    stands in for the intercept.
    """
    rng = np.random.default_rng(seed)
    n = 2 * n_per_class
    y = np.repeat([0, 1], n_per_class)
    shared = 3.0 * rng.standard_normal(n)
    X = 0.05 * rng.standard_normal((n, 5))
    X[:, 0] += shared + 0.5 * y
    X[:, 1] += shared
    X[:, 2] = 1.0
    return X.astype(np.float32), y


def test_select_lambda_deterministic_and_sensible():
    X, y = _correlated_noise_problem()
    lambdas = [1e-2, 1.0, 1e3]
    best, scores = select_lambda(X, y, lambdas, n_folds=3, seed=0)
    best2, scores2 = select_lambda(X, y, lambdas, n_folds=3, seed=0)
    assert best == best2 and scores == scores2
    assert set(scores) == set(lambdas)
    assert best == 1e-2, scores
    assert scores[best] > 0.95 and scores[1e3] < 0.75, scores


def test_select_lambda_uses_only_training_folds(monkeypatch):
    params = list(inspect.signature(select_lambda).parameters)
    assert params[:3] == ["X", "y", "lambdas"] and not any("test" in p for p in params)
    X, y = _correlated_noise_problem()
    seen = []
    orig = LogisticRegression.fit

    def spy(self, Xf, yf, mask=None):
        seen.append(len(Xf))
        return orig(self, Xf, yf, mask=mask)

    monkeypatch.setattr(LogisticRegression, "fit", spy)
    select_lambda(X, y, [0.01, 1.0], n_folds=3, solver="lbfgs")  # one fit per (λ, fold)
    assert len(seen) == 6 and max(seen) <= len(X) * 2 // 3 + 1

    from lowshot.tasks.classifiers import selection

    batched, orig_solve = [], selection.newton_cg

    def spy_batch(X64, W, losses, regs, *args, **kwargs):
        batched.append((losses.weights > 0).sum(0).tolist())  # training rows of each problem
        return orig_solve(X64, W, losses, regs, *args, **kwargs)

    monkeypatch.setattr(selection, "newton_cg", spy_batch)
    select_lambda(X, y, [0.01, 1.0], n_folds=3)  # one batched solve of the 6 problems
    assert len(batched) == 1 and len(batched[0]) == 6 and max(batched[0]) <= len(X) * 2 // 3 + 1


def test_select_lambda_low_shot_fallbacks():
    Xtr, ytr, _, _ = _lowshot_problem(n_classes=20, per_class=2, dim=16, seed=6)
    best, scores = select_lambda(Xtr, ytr, [0.01, 1.0], n_folds=3)  # 2 per class: filtered folds
    assert best in (0.01, 1.0) and all(np.isfinite(list(scores.values())))
    X1, y1, _, _ = _lowshot_problem(n_classes=20, per_class=1, dim=16, seed=6)
    with pytest.warns(UserWarning, match="returning the default lambda"):
        best, scores = select_lambda(X1, y1, [0.01, 1.0], default=0.0025)
    assert best == 0.0025 and all(np.isnan(list(scores.values())))


def test_select_lambda_multilabel():
    X, Y, _ = _multilabel_problem(n=240, seed=3)
    best, scores = select_lambda(X, Y, [1e-2, 1e4], multilabel=True, seed=0)
    assert best == 1e-2 and scores[1e-2] > 0.85


# ------------------------------------------------------------------------------ k-NN
def test_knn_hand_computed_votes_and_temperature():
    # query at angle 0; neighbours at cosine 1.0 (class 0), 0.8 and 0.6 (class 1), -1 (class 0)
    ang = np.arccos([1.0, 0.8, 0.6, -1.0])
    Xtr = np.stack([np.cos(ang), np.sin(ang)], 1)
    ytr = np.array([0, 1, 1, 0])
    q = np.array([[2.0, 0.0]])  # normalised inside
    for backend in ("faiss", "torch"):
        knn = KNNClassifier(k=3, temperature=0.1, backend=backend).fit(Xtr, ytr)
        v0, v1 = np.exp(1.0 / 0.1), np.exp(0.8 / 0.1) + np.exp(0.6 / 0.1)
        np.testing.assert_allclose(knn.predict_proba(q)[0], [v0 / (v0 + v1), v1 / (v0 + v1)], rtol=1e-5)
        assert knn.predict(q)[0] == 0  # sharp temperature: the single closest neighbour wins
        soft = KNNClassifier(k=3, temperature=10.0, backend=backend).fit(Xtr, ytr)
        assert soft.predict(q)[0] == 1  # flat weights: majority among the 3 neighbours
        sharp = KNNClassifier(k=3, temperature=1e-3, backend=backend).fit(Xtr, ytr)
        assert np.isfinite(sharp.predict_proba(q)).all() and sharp.predict(q)[0] == 0  # no overflow
        big_k = KNNClassifier(k=50, temperature=0.1, backend=backend).fit(Xtr, ytr)
        assert big_k.k_ == 4 and big_k.kneighbors(q)[1].shape == (1, 4)


def test_knn_backends_agree():
    Xtr, ytr, Xte, yte = _lowshot_problem(n_classes=25, per_class=20, n_test_per_class=8, dim=64, seed=7)
    labels = ytr * 3 + 10
    f = KNNClassifier(k=20, backend="faiss").fit(Xtr, labels)
    t = KNNClassifier(k=20, backend="torch", batch_size=37).fit(Xtr, labels)
    np.testing.assert_array_equal(f.predict(Xte), t.predict(Xte))
    np.testing.assert_allclose(f.predict_proba(Xte), t.predict_proba(Xte), atol=1e-5)
    assert f.score(Xte, yte * 3 + 10) > 0.5
    pt = t.predict(torch.from_numpy(Xte))
    assert isinstance(pt, torch.Tensor) and np.array_equal(pt.numpy(), f.predict(Xte))


def test_knn_torch_search_holds_bounded_similarity_blocks(monkeypatch):
    """The torch search never holds more than MAX_BLOCK_BYTES of query x reference similarities (what keeps the
    k-NN against a large reference set within a GPU's memory), and the blocks change no neighbour."""
    from lowshot.tasks.classifiers import knn as knn_module

    Xtr, ytr, Xte, _ = _lowshot_problem(n_classes=10, per_class=30, n_test_per_class=20, dim=16, seed=3)
    whole = KNNClassifier(k=5, backend="torch").fit(Xtr, ytr)
    expected = [t.numpy() for t in whole.kneighbors(Xte)]
    blocks, topk = [], torch.topk

    def spy(sims, *args, **kwargs):
        blocks.append(sims.numel() * sims.element_size())
        return topk(sims, *args, **kwargs)

    monkeypatch.setattr(knn_module, "MAX_BLOCK_BYTES", 4 * len(Xtr) * 7)  # 7 queries per block
    monkeypatch.setattr(torch, "topk", spy)
    small = KNNClassifier(k=5, backend="torch").fit(Xtr, ytr)
    got = [t.numpy() for t in small.kneighbors(Xte)]
    assert small.block_rows() == 7 and len(blocks) == -(-len(Xte) // 7)
    assert max(blocks) <= knn_module.MAX_BLOCK_BYTES
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)


def test_knn_without_faiss_says_how_to_install_it(monkeypatch):
    import sys

    from lowshot.model_zoo.errors import MissingPackageError
    from lowshot.tasks.classifiers.knn import faiss_gpu_available, import_faiss

    assert not faiss_gpu_available(import_faiss())  # faiss-cpu here: no GPU index (a CUDA search uses torch)
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    X, y, _, _ = _lowshot_problem(n_classes=3, per_class=3, dim=4)
    with pytest.raises(MissingPackageError, match=r"pip install faiss-cpu.*faiss-gpu-cu12.*backend='torch'"):
        KNNClassifier(backend="faiss").fit(X, y)
    assert KNNClassifier(backend="torch").fit(X, y).backend_ == "torch"  # needs no faiss
