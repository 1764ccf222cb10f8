"""Classifiers for frozen features in the low-label regime.

Four pieces, each a small scikit-learn-style estimator or function without global state:

* :func:`preprocess` -- the per-sample normalisation of MSN's evaluation code (cyanure's
  ``preprocess(X, centering=True, normalize=True, columns=False)``): subtract each row's own mean,
  then L2-normalise each row.
* :class:`LogisticRegression` -- multinomial (or one-vs-rest multi-label) logistic regression with
  an L2 penalty and no intercept, solved full-batch with L-BFGS in torch (CPU or CUDA).
* :func:`select_lambda` -- cross-validated choice of the regularisation on the labelled set only.
* :class:`KNNClassifier` -- DINO's temperature-weighted cosine k-NN (faiss or torch backend).

Objective of :class:`LogisticRegression` (``lambd`` = λ, N = number of training samples)::

    F(W) = 1/N · Σ_i CE(y_i, W^T x_i)  +  (λ/N)/2 · ||W||_F²

This is exactly the objective of ``cyanure.estimators.Classifier(loss="multiclass-logistic",
penalty="l2", lambda_1=λ/N, fit_intercept=False)``: cyanure minimises
``1/n Σ_i L(y_i, W^T x_i) + ψ(W)`` with ``ψ(W) = lambda_1/2 ||W||²`` for ``penalty="l2"``, and MSN's
``logistic_eval.py`` passes ``lambd / len(embs)`` as that ``lambda_1``. It is also scikit-learn's
``LogisticRegression(C=1/λ, fit_intercept=False)`` objective divided by N (sklearn minimises
``1/2 ||W||² + C Σ_i CE_i``), so both have the same minimiser.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["preprocess", "LogisticRegression", "select_lambda", "KNNClassifier", "DEFAULT_LAMBDA"]

#: Default λ (the total penalty, before the division by N that MSN applies).
DEFAULT_LAMBDA = 0.0025


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _resolve_device(device: Any, *arrays: Any) -> torch.device:
    """``device`` if given (checked), else the device of the first torch input, else CPU."""
    if device is None:
        for a in arrays:
            if isinstance(a, torch.Tensor):
                return a.device
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA requested but not available (torch.cuda.is_available() is False)")
    return device


def _to_tensor(a: Any, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    if not isinstance(a, torch.Tensor):
        a = np.asarray(a)  # read-only memory maps of the feature cache are copied: torch must never write into them
        a = torch.as_tensor(a if a.flags.writeable else a.copy())
    return a.to(device=device, dtype=dtype if dtype is not None else a.dtype)


def _to_numpy(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _like_input(out: torch.Tensor, like: Any) -> Any:
    """numpy in -> numpy out; torch in -> torch out on the input's device."""
    if isinstance(like, torch.Tensor):
        return out.to(like.device)
    return out.detach().cpu().numpy()


def _check_2d(X: Any, name: str = "X") -> None:
    if len(X.shape) != 2:
        raise ValueError(f"{name} must be 2-D [n_samples, n_features], got shape {tuple(X.shape)}")


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------
def preprocess(X: Any) -> Any:
    """Per-sample centring and L2 normalisation (MSN / cyanure ``columns=False``).

    Each row gets its own mean subtracted, then is divided by its L2 norm. numpy input returns a
    new float32 array; torch input returns a new tensor with the same dtype and device (computed in
    float32 at least). A row that is constant (zero after centring) stays all-zero. Raises
    ``ValueError`` if any feature is NaN or infinite.
    """
    _check_2d(X)
    if isinstance(X, torch.Tensor):
        work = X.float() if X.dtype in (torch.float16, torch.bfloat16) else X
        bad = int((~torch.isfinite(work)).any(dim=1).sum())
        if bad:
            raise ValueError(f"features contain NaN/inf in {bad} rows")
        Xc = work - work.mean(dim=1, keepdim=True)
        norm = torch.linalg.vector_norm(Xc, dim=1, keepdim=True)
        Xc = Xc / torch.where(norm > 0, norm, torch.ones_like(norm))
        return Xc.to(X.dtype)
    X = np.asarray(X)
    bad = int((~np.isfinite(X)).any(axis=1).sum())
    if bad:
        raise ValueError(f"features contain NaN/inf in {bad} rows")
    Xc = X.astype(np.float64)  # float64 for the reductions, float32 out
    Xc -= Xc.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(Xc, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    Xc /= norm
    return Xc.astype(np.float32)


# --------------------------------------------------------------------------------------------
# losses on logits, and an L-BFGS for linear models
# --------------------------------------------------------------------------------------------
# The loss functions work in place on a scratch copy of the logits: on CPU, allocating a fresh
# [N, C] tensor costs more than the arithmetic on it (page faults), so the solver keeps buffers.
def _softmax_ce_(Z: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Σ_i CE(y_i, z_i) and R = dLoss/dZ = softmax(Z) - onehot(y), computed in Z's storage.

    Precision matters near the optimum, where the true class takes almost all the mass: the loss
    is log1p(Σ_{c≠y} e^{z_c - z_y}) and R's true-class entry -Σ_{c≠y} p_c, both without the
    cancellation of log(Σ_c ...) or p_y - 1 in float32.
    """
    y1 = y[:, None]
    z_true = Z.gather(1, y1)
    zmax = Z.amax(dim=1, keepdim=True)
    E = Z.sub_(zmax).exp_()                     # e^{z - max}
    e_true = (z_true - zmax).exp()
    E.scatter_(1, y1, 0.0)
    rest = E.sum(dim=1, keepdim=True)           # Σ_{c≠y} e^{z_c - max}
    total = e_true + rest
    loss = torch.where(e_true > 0.5, torch.log1p(rest / e_true), total.log() - (z_true - zmax))
    R = E.div_(total)
    R.scatter_(1, y1, -rest / total)
    return float(loss.sum(dtype=torch.float64)), R


def _sigmoid_bce_(Z: torch.Tensor, S: torch.Tensor, M: torch.Tensor | None) -> tuple[float, torch.Tensor]:
    """Σ_ic m_ic BCE(y_ic, z_ic) and R = dLoss/dZ = m ⊙ (sigmoid(Z) - Y), computed in Z's storage.

    ``S = 1 - 2Y`` (±1): BCE = softplus(S z) and sigmoid(z) - y = S sigmoid(S z), which avoid the
    float32 cancellation of softplus(z) - z and sigmoid(z) - 1 for confident positives.
    """
    U = Z.mul_(S)
    L = torch.nn.functional.softplus(U)
    if M is not None:
        L.mul_(M)
    R = U.sigmoid_().mul_(S)
    if M is not None:
        R.mul_(M)
    return float(L.sum(dtype=torch.float64)), R


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """<a, b> of two float64 solver vectors."""
    return float(torch.dot(a.reshape(-1), b.reshape(-1)))


def _rowdot(A: torch.Tensor, B: torch.Tensor) -> float:
    """<A, B> for large [N, C] tensors: a dot per row in the input dtype, float64 over rows."""
    return float(torch.einsum("ij,ij->i", A, B).sum(dtype=torch.float64))


class _LBFGSMemory:
    """The last ``m`` curvature pairs (s, y) and the product H·g with the L-BFGS inverse Hessian H.

    Uses the compact form of Byrd, Nocedal & Schnabel (1994, eq. 3.1) with H0 = γI,
    γ = s'y / y'y of the newest pair: with S, Y the pairs as columns (oldest first),
    R = triu(S'Y) and Dg = diag(S'Y),

        H g = γ g + S p - γ Y u,   u = R⁻¹ S'g,   p = R⁻ᵀ((Dg + γ Y'Y) u - γ Y'g).

    It equals the classic two-loop recursion but costs three matrix-vector products over the
    stored pairs instead of 4m vector operations. Pairs live in one float64 buffer [2m, P] (rows
    0..m-1: s, rows m..2m-1: y), filled as a ring; S'Y and Y'Y are kept up to date per pair.
    """

    def __init__(self, m: int, p: int, device: torch.device):
        self.m = m
        self.buf = torch.zeros(2 * m, p, dtype=torch.float64, device=device)
        self.SY = torch.zeros(m, m, dtype=torch.float64, device=device)   # SY[i, j] = s_i'y_j
        self.YY = torch.zeros(m, m, dtype=torch.float64, device=device)   # YY[i, j] = y_i'y_j
        self.order: list[int] = []              # buffer rows, oldest pair first

    def push(self, s: torch.Tensor, y: torch.Tensor) -> None:
        m = self.m
        r = self.order.pop(0) if len(self.order) == m else len(self.order)
        self.buf[r], self.buf[m + r] = s, y
        prods = self.buf @ torch.stack([s, y], dim=1)          # [2m, 2]: s_i's, s_i'y, y_i's, y_i'y
        self.SY[r, :] = prods[m:, 0]
        self.SY[:, r] = prods[:m, 1]
        self.YY[r, :] = self.YY[:, r] = prods[m:, 1]
        self.order.append(r)

    def __len__(self) -> int:
        return len(self.order)

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        """H g (for an empty memory: g)."""
        if not self.order:
            return g.clone()
        m, idx = self.m, torch.tensor(self.order, device=g.device)
        ab = self.buf @ g                                      # [S'g; Y'g] in buffer order
        a, b = ab[:m][idx], ab[m:][idx]
        SY, YY = self.SY[idx][:, idx], self.YY[idx][:, idx]
        newest = self.order[-1]
        gamma = float(self.SY[newest, newest] / self.YY[newest, newest])
        R = torch.triu(SY)
        u = torch.linalg.solve_triangular(R, a[:, None], upper=True)[:, 0]
        rhs = (torch.diag(torch.diagonal(SY)) + gamma * YY) @ u - gamma * b
        p = torch.linalg.solve_triangular(R.T, rhs[:, None], upper=False)[:, 0]
        coef = torch.zeros(2 * m, dtype=g.dtype, device=g.device)
        coef[idx], coef[m + idx] = p, -gamma * u
        return torch.addmv(g, self.buf.T, coef, beta=gamma)


class _threads_for:
    """One CPU thread for small problems: their per-iteration work is too small to split, and on a busy machine
    torch's thread pool then costs 5-10x (measured: 46 x 48 x 20 multi-label fit, 2.35 s on 2 threads, 0.29 s on 1)."""

    SMALL = 1 << 22  # n * d * classes

    def __init__(self, size: int, device: torch.device):
        self.limit = device.type == "cpu" and size < self.SMALL

    def __enter__(self):
        self.saved = torch.get_num_threads()
        if self.limit:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)


def _lbfgs_linear(X, W, loss_fn, reg, tol, g0_norm, max_iter, history_size, c2=0.1, c2_first=1e-3,
                  refresh=20):
    """Minimise F(W) = loss_fn(X W) / N + reg/2 ||W||² with L-BFGS, updating W in place.

    The model is linear, so along a search direction D the logits are Z + t·(X D): an iteration
    costs one matmul for X D, one for the gradient X^T R, and the line search only re-evaluates
    the loss on logits (no matmul). Because those evaluations are cheap, the line search asks for
    the strong Wolfe conditions with a tight c2 (c1=1e-4, c2=0.1): fewer, better iterations. The
    first step (steepest descent from W = 0, no curvature information yet) is an almost exact
    1-D minimisation (c2=1e-3): on nearly separable problems the objective along -∇F(0) is very
    flat and a loose first step costs many iterations (on the 1 %-ImageNet shape, half of them).
    The line search uses safeguarded secant steps on φ'(t), monotone because F is convex. Z is updated
    incrementally, recomputed every ``refresh`` iterations, and F, ∇F are recomputed from scratch
    before convergence is declared and at the end (so the reported numbers are exact).

    The [N, C]-sized work runs in X's dtype; the solver's own state (W, ∇F, directions, curvature
    pairs) is kept in float64, which costs little ([D, C] only) and keeps the penalty terms and
    inner products free of float32 rounding noise.

    Stops when ||∇F||_∞ <= tol · g0_norm ("converged"), after ``max_iter`` iterations
    ("max_iter"), or when the line search finds no decrease ("no_progress": the precision floor).
    """
    n, dtype = X.shape[0], X.dtype
    W64 = W.to(torch.float64)                   # solver copy; W (X's dtype) follows it
    Z = torch.mm(X, W)                          # logits at W (kept up to date incrementally)
    ZD = torch.empty_like(Z)                    # logits of the search direction, X D
    buf = torch.empty_like(Z)                   # scratch: trial logits, then dLoss/dZ
    memory = _LBFGSMemory(history_size, W.numel(), W.device)

    def gradient(R):
        return torch.mm(X.T, R).to(torch.float64).div_(n).add_(W64, alpha=reg)

    def exact():
        torch.mm(X, W, out=Z)
        lsum, R = loss_fn(buf.copy_(Z))
        return lsum / n + 0.5 * reg * _dot(W64, W64), gradient(R)

    f, G = exact()
    n_matmul, stale, it, status = 2, 0, 0, "max_iter"
    while True:
        if float(G.abs().max()) <= tol * g0_norm:
            if stale == 0:
                status = "converged"
                break
            (f, G), n_matmul, stale = exact(), n_matmul + 2, 0   # re-check without drift
            continue
        if it >= max_iter:
            break
        D = -memory.apply(G.reshape(-1)).reshape(G.shape)       # D = -H ∇F
        gtd = _dot(G, D)
        if gtd >= 0:                            # not a descent direction (numerics): restart
            memory = _LBFGSMemory(history_size, W.numel(), W.device)
            D, gtd = -G, -_dot(G, G)
        torch.mm(X, D.to(dtype), out=ZD)
        n_matmul += 1
        # first iteration (steepest descent from W = 0): start where the logits move by ~1
        t0 = 1.0 if len(memory) else 1.0 / max(float(ZD.abs().max()), 1e-30)
        t, f_new, R = _line_search(Z, ZD, buf, W64, D, f, gtd, t0, loss_fn, reg, n,
                                   c2=c2 if len(memory) else c2_first)
        if t == 0.0:
            status = "no_progress"
            break
        W64.add_(D, alpha=t)
        W.copy_(W64)
        Z.add_(ZD, alpha=t)
        G_new = gradient(R)
        n_matmul += 1
        s_vec, y_vec = D.mul_(t).reshape(-1), (G_new - G).reshape(-1)
        sy = _dot(s_vec, y_vec)
        if sy > 1e-10 * _dot(y_vec, y_vec):     # usable curvature pair (always, F is convex)
            memory.push(s_vec, y_vec)
        f, G = f_new, G_new
        it, stale = it + 1, stale + 1
        if stale % refresh == 0:                # drop the drift of the incremental logits
            torch.mm(X, W, out=Z)
            f = loss_fn(buf.copy_(Z))[0] / n + 0.5 * reg * _dot(W64, W64)
            n_matmul += 1
    if stale:                                   # report exact values at the final W
        (f, G), n_matmul = exact(), n_matmul + 2
        if status != "converged" and float(G.abs().max()) <= tol * g0_norm:
            status = "converged"
    return {"n_iter": it, "n_matmul": n_matmul, "objective": f,
            "grad_norm": float(G.abs().max()), "status": status}


def _line_search(Z, ZD, buf, W, D, f0, gtd0, t, loss_fn, reg, n, c1=1e-4, c2=0.1, max_ls=25):
    """Strong-Wolfe step along D using only the logits Z + t·ZD (computed into ``buf``).

    Returns (t, F(W + tD), dLoss/dZ at t); t = 0 if no decrease was found (precision floor).
    """
    wd, dd, ww = _dot(W, D), _dot(D, D), _dot(W, W)
    noise = torch.finfo(Z.dtype).eps * abs(f0)  # rounding level of F: decreases below it are invisible

    def phi(t):
        lsum, R = loss_fn(torch.add(Z, ZD, alpha=t, out=buf))
        f = lsum / n + 0.5 * reg * (ww + 2 * t * wd + t * t * dd)
        return f, _rowdot(R, ZD) / n + reg * (wd + t * dd), R

    lo, d_lo = 0.0, gtd0                        # φ'(lo) < 0: the minimiser lies beyond lo
    prev, d_prev = 0.0, gtd0                    # the lo before, for extrapolating
    hi, d_hi = math.inf, math.nan
    best_t, best_f = 0.0, f0
    for trial in range(max_ls):
        if trial >= 10 and best_t > 0:         # stuck at the rounding level: take the best decrease
            break
        ft, dt, R = phi(t)
        # φ' is accurate even where differences of F drown in rounding; by convexity a t with
        # small |φ'(t)| is near the 1-D minimiser, so F "not above f0 within rounding" suffices
        if abs(dt) <= c2 * abs(gtd0) and (ft <= f0 + c1 * t * gtd0 or ft <= f0 + noise):
            return t, ft, R
        if ft < best_f:
            best_t, best_f = t, ft
        if dt < 0:                              # convex: the sign of φ' says where the minimiser is
            prev, d_prev, lo, d_lo = lo, d_lo, t, dt
        else:
            hi, d_hi = t, dt
        if math.isinf(hi):                      # still descending: extrapolate, 2x..100x
            t_sec = lo - d_lo * (lo - prev) / (d_lo - d_prev) if d_lo > d_prev else math.inf
            t = min(max(t_sec, 2.0 * lo), 100.0 * lo)
        else:                                   # bracketed: secant on φ', inside the bracket
            width = hi - lo
            t = lo - d_lo * width / (d_hi - d_lo) if d_hi > 0 else math.nan
            if not lo + 0.1 * width <= t <= hi - 0.1 * width:
                t = lo + 0.5 * width
            if width <= 1e-10 * hi:
                break
    if best_t == 0.0:
        return 0.0, f0, None
    ft, _, R = phi(best_t)                      # buf holds the last trial: recompute the best
    return best_t, ft, R


# --------------------------------------------------------------------------------------------
# logistic regression
# --------------------------------------------------------------------------------------------
class LogisticRegression:
    """L2-regularised logistic regression without intercept, full-batch L-BFGS in torch.

    Objective (N = number of training samples, λ = ``lambd``)::

        multiclass:  F(W) = 1/N Σ_i CE(y_i, W^T x_i)                 + (λ/N)/2 ||W||²
        multilabel:  F(W) = 1/N Σ_i Σ_c m_ic BCE(y_ic, w_c^T x_i)   + (λ/N)/2 ||W||²

    The multiclass objective is cyanure's ``Classifier(loss="multiclass-logistic", penalty="l2",
    lambda_1=λ/N, fit_intercept=False)`` (cyanure's l2 penalty is ``lambda_1/2 ||w||²``). The
    multilabel objective is one-vs-rest: each column c is an independent binary problem; scaling
    both terms by N instead of the column's number of unmasked samples N_c does not change the
    minimiser, so column c is exactly a binary logistic regression on its unmasked samples with
    penalty (λ/N_c)/2 ||w_c||² -- cyanure's one-vs-rest ``loss="logistic"`` per class.

    Solver: full-batch L-BFGS in torch (float32 by default, ``dtype=torch.float64`` optional; CPU
    or CUDA), started from W = 0, with the loss and gradient computed by hand (no autograd). Since
    the model is linear, the line search moves along precomputed logits Z + t·X D, so an iteration
    costs two [N, D] x [D, C] matmuls plus a few cheap passes over the [N, C] logits. Memory: three
    [N, C] buffers in the working dtype and 2·history_size float64 [D, C] curvature vectors.

    Stopping rule (default ``tol=1e-4``): stop at the first iterate with relative gradient norm
    ``||∇F(W)||_∞ / ||∇F(0)||_∞ <= tol``, i.e. the largest entry of the gradient has fallen by a
    factor 10^4 from the start; F and ∇F are recomputed from scratch before this is declared.
    ``converged_`` is True iff it holds at the returned W. The solver also stops at ``max_iter``
    iterations or when no decrease can be measured any more (float32 reaches ~1e-7 relative
    gradient); both count as not converged and emit a ``RuntimeWarning``. Why relative gradient:
    with the literature's small λ (λ/N ~ 1e-6..1e-7) the problem is nearly separable, ||W|| at the
    optimum is large and the objective is very flat, so a rule on objective decrease stops at
    arbitrary points; the gradient test is scale-free (independent of N, C and of λ) and at 1e-4
    the held-out predictions of low-shot shaped problems have stopped changing (the objective is
    within ~1e-6 relative of the optimum; see ``benchmark/perf/classifier_speed.py``). Pass a
    smaller ``tol`` to get closer to the exact optimum.

    ``device``: None = the device of a torch ``X``, else CPU; "cuda" raises if CUDA is absent.
    ``history_size``: number of L-BFGS curvature pairs kept.

    After ``fit``: ``coef_`` [D, C] (numpy, like cyanure's ``coef_``), ``classes_``, ``n_iter_``
    (L-BFGS iterations), ``n_matmul_`` ([N, D] x [D, C] products, the cost unit), ``grad_norm_``
    (∞-norm of the final gradient), ``rel_grad_norm_`` (divided by the ∞-norm at W = 0),
    ``objective_`` (final F(W)), ``converged_``, ``stop_reason_`` ("converged", "max_iter" or
    "no_progress"). ``convergence_info()`` returns them as a dict for result records.
    """

    def __init__(self, lambd: float = DEFAULT_LAMBDA, max_iter: int = 1000, tol: float = 1e-4,
                 device: Any = None, multilabel: bool = False, dtype: torch.dtype = torch.float32,
                 history_size: int = 20):
        self.lambd = lambd
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.multilabel = multilabel
        self.dtype = dtype
        self.history_size = history_size

    # ---------------------------------------------------------------- fitting
    def fit(self, X: Any, y: Any, mask: Any = None) -> "LogisticRegression":
        """Fit on preprocessed features ``X`` [N, D].

        multiclass: ``y`` [N] arbitrary integer (or other sortable) labels, mapped through
        ``classes_``. multilabel: ``y`` [N, C] in {0, 1}; ``mask`` [N, C] bool, False = ignore that
        entry (e.g. VOC 'difficult'); the classes are the column indices.
        """
        if self.lambd < 0:
            raise ValueError(f"lambd must be >= 0, got {self.lambd}")
        _check_2d(X)
        dev = _resolve_device(self.device, X)
        Xt = _to_tensor(X, dev, self.dtype).contiguous()
        if not bool(torch.isfinite(Xt).all()):
            raise ValueError("X contains NaN/inf")
        n, d = Xt.shape
        if n == 0:
            raise ValueError("cannot fit on 0 samples")
        reg = self.lambd / n

        if self.multilabel:
            Y = _to_tensor(y, dev, self.dtype)
            _check_2d(Y, "y")
            if Y.shape[0] != n:
                raise ValueError(f"X has {n} rows but y has {Y.shape[0]}")
            if not bool(((Y == 0) | (Y == 1)).all()):
                raise ValueError("multilabel y must contain only 0/1")
            M = None
            if mask is not None:
                M = _to_tensor(mask, dev).to(torch.bool)
                if tuple(M.shape) != tuple(Y.shape):
                    raise ValueError(f"mask shape {tuple(M.shape)} != y shape {tuple(Y.shape)}")
                Y = torch.where(M, Y, torch.zeros_like(Y))   # masked entries carry no label
                M = M.to(self.dtype)
            self.classes_ = np.arange(Y.shape[1])

            S = 1.0 - 2.0 * Y

            def loss_fn(Z):
                return _sigmoid_bce_(Z, S, M)

            # at W = 0 every sigmoid is 1/2: ∇F(0) = X^T (m ⊙ (1/2 - Y)) / N
            R0 = 0.5 - Y if M is None else M * (0.5 - Y)
            grad0 = Xt.T @ R0 / n
        else:
            if mask is not None:
                raise ValueError("mask is only supported with multilabel=True")
            y_np = _to_numpy(y).reshape(-1)
            if y_np.shape[0] != n:
                raise ValueError(f"X has {n} rows but y has {y_np.shape[0]}")
            self.classes_, y_idx = np.unique(y_np, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError("need at least 2 classes to fit a classifier")
            y_t = torch.as_tensor(y_idx.reshape(-1), dtype=torch.long, device=dev)

            def loss_fn(Z):
                return _softmax_ce_(Z, y_t)

            # at W = 0 every softmax is 1/C: ∇F(0) = (X^T 1 1^T / C - X^T Y) / N, no matmul needed
            n_cls = len(self.classes_)
            class_sums = torch.zeros(n_cls, d, dtype=self.dtype, device=dev).index_add_(0, y_t, Xt)
            grad0 = (Xt.sum(dim=0)[:, None] / n_cls - class_sums.T) / n

        W = torch.zeros(d, len(self.classes_), dtype=self.dtype, device=dev)
        g0 = float(grad0.abs().max())
        with _threads_for(Xt.numel() * W.shape[1], Xt.device):
            info = _lbfgs_linear(Xt, W, loss_fn, reg, self.tol, g0, self.max_iter, self.history_size)
        self._W = W
        self.coef_ = W.cpu().numpy()
        self.n_iter_ = info["n_iter"]
        self.n_matmul_ = info["n_matmul"]
        self.objective_ = info["objective"]
        self.initial_grad_norm_ = g0
        self.grad_norm_ = info["grad_norm"]
        self.rel_grad_norm_ = self.grad_norm_ / g0 if g0 > 0 else 0.0
        self.stop_reason_ = info["status"]
        self.converged_ = info["status"] == "converged"
        if not self.converged_:
            why = {"max_iter": "max_iter reached",
                   "no_progress": "no further decrease possible at this floating-point precision"}
            warnings.warn(
                f"LogisticRegression did not converge: stopped after {self.n_iter_} iterations with "
                f"relative gradient norm {self.rel_grad_norm_:.2e} > tol={self.tol:g} "
                f"({why[self.stop_reason_]})", RuntimeWarning, stacklevel=2)
        return self

    def convergence_info(self) -> dict:
        """Convergence record for result files (plain Python types)."""
        self._check_fitted()
        return {
            "solver": "lbfgs",
            "n_iter": self.n_iter_,
            "n_matmul": self.n_matmul_,
            "stop_reason": self.stop_reason_,
            "grad_norm": self.grad_norm_,
            "grad_norm_kind": "inf",
            "rel_grad_norm": self.rel_grad_norm_,
            "objective": self.objective_,
            "converged": self.converged_,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "lambd": self.lambd,
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    # ---------------------------------------------------------------- inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "_W"):
            raise RuntimeError("LogisticRegression is not fitted yet; call fit() first")

    def _logits(self, X: Any) -> torch.Tensor:
        self._check_fitted()
        _check_2d(X)
        Xt = _to_tensor(X, self._W.device, self._W.dtype)
        if Xt.shape[1] != self._W.shape[0]:
            raise ValueError(f"X has {Xt.shape[1]} features, the model was fit on {self._W.shape[0]}")
        return Xt @ self._W

    def decision_function(self, X: Any) -> Any:
        """Logits [N, C]."""
        return _like_input(self._logits(X), X)

    def predict_proba(self, X: Any) -> Any:
        """Softmax probabilities (multiclass) or per-class sigmoids (multilabel), [N, C]."""
        Z = self._logits(X)
        P = torch.sigmoid(Z) if self.multilabel else torch.softmax(Z, dim=1)
        return _like_input(P, X)

    def predict(self, X: Any) -> Any:
        """Labels from ``classes_`` [N] (multiclass) or a {0,1} matrix [N, C] (multilabel, p > 0.5)."""
        Z = self._logits(X)
        if self.multilabel:
            return _like_input((Z > 0).to(torch.int64), X)
        pred = self.classes_[Z.argmax(dim=1).cpu().numpy()]
        return torch.as_tensor(pred, device=X.device) if isinstance(X, torch.Tensor) else pred

    def score(self, X: Any, y: Any) -> float:
        """Accuracy (multiclass) or mAP over classes with positives (multilabel)."""
        if self.multilabel:
            return _mean_average_precision(_to_numpy(y), _to_numpy(self.decision_function(X)))
        return float(np.mean(_to_numpy(self.predict(X)) == _to_numpy(y).reshape(-1)))


def _mean_average_precision(Y: np.ndarray, scores: np.ndarray, mask: np.ndarray | None = None) -> float:
    """mAP over the columns that have at least one (unmasked) positive; masked entries skipped."""
    from sklearn.metrics import average_precision_score

    aps = []
    for c in range(Y.shape[1]):
        keep = np.ones(len(Y), bool) if mask is None else mask[:, c].astype(bool)
        yc = Y[keep, c]
        if yc.sum() == 0:
            continue
        aps.append(average_precision_score(yc, scores[keep, c]))
    return float(np.mean(aps)) if aps else float("nan")


# --------------------------------------------------------------------------------------------
# cross-validated choice of λ
# --------------------------------------------------------------------------------------------
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
    y_np = _to_numpy(y)
    n = y_np.shape[0]
    if n_folds < 2 or n < n_folds:
        raise ValueError(f"need n_folds >= 2 and at least n_folds samples (n={n}, n_folds={n_folds})")
    mask_np = None if mask is None else _to_numpy(mask).astype(bool)

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
            if multilabel:
                s = _mean_average_precision(y_np[te], _to_numpy(clf.decision_function(rows(Xt, te))),
                                            None if mask_np is None else mask_np[te])
            else:
                s = clf.score(rows(Xt, te), y_np[te])
            fold_scores.append(s)
        scores[lam] = float(np.nanmean(fold_scores))
    best = max(lambdas, key=lambda l: (-math.inf if math.isnan(scores[l]) else scores[l], l))
    return best, scores


# --------------------------------------------------------------------------------------------
# weighted k-NN (DINO)
# --------------------------------------------------------------------------------------------
class KNNClassifier:
    """DINO's weighted k-NN on cosine similarity.

    Features are L2-normalised inside (no centring). For each query: the top-k training samples by
    cosine similarity s, each voting for its class with weight exp(s / temperature); the prediction
    is the class with the largest summed vote and ``predict_proba`` the votes normalised to sum 1.
    ``k`` is clipped to the number of training samples.

    backend="faiss": exact ``faiss.IndexFlatIP`` (a GPU index only if ``faiss.get_num_gpus() > 0``
    and ``device`` is CUDA). backend="torch": matmul + topk over query chunks of ``batch_size``
    rows, so memory stays at ``batch_size × n_train``.
    """

    def __init__(self, k: int = 20, temperature: float = 0.07, backend: str = "faiss",
                 device: Any = None, batch_size: int = 1024):
        self.k = k
        self.temperature = temperature
        self.backend = backend
        self.device = device
        self.batch_size = batch_size

    @staticmethod
    def _normalize(X: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(X, dim=1)

    def fit(self, X: Any, y: Any) -> "KNNClassifier":
        if self.backend not in ("faiss", "torch"):
            raise ValueError(f"backend must be 'faiss' or 'torch', got {self.backend!r}")
        if self.k < 1 or self.temperature <= 0:
            raise ValueError("k must be >= 1 and temperature > 0")
        _check_2d(X)
        self._device = _resolve_device(self.device, X)
        self.classes_, y_idx = np.unique(_to_numpy(y).reshape(-1), return_inverse=True)
        self._train = self._normalize(_to_tensor(X, self._device, torch.float32)).contiguous()
        self._y = torch.as_tensor(y_idx.reshape(-1), dtype=torch.long, device=self._device)
        if self._train.shape[0] != self._y.shape[0]:
            raise ValueError("X and y have different numbers of samples")
        self.k_ = min(self.k, self._train.shape[0])
        self._index = None
        if self.backend == "faiss":
            import faiss

            d = self._train.shape[1]
            if self._device.type == "cuda" and faiss.get_num_gpus() > 0:
                self._faiss_res = faiss.StandardGpuResources()
                self._index = faiss.GpuIndexFlatIP(self._faiss_res, d)
            else:
                self._index = faiss.IndexFlatIP(d)
            self._index.add(np.ascontiguousarray(self._train.cpu().numpy(), dtype=np.float32))
        return self

    def kneighbors(self, X: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(cosine similarities, training indices), both [M, k_], most similar first."""
        if not hasattr(self, "_train"):
            raise RuntimeError("KNNClassifier is not fitted yet; call fit() first")
        Q = self._normalize(_to_tensor(X, self._device, torch.float32))
        if self.backend == "faiss":
            sims, idx = self._index.search(np.ascontiguousarray(Q.cpu().numpy()), self.k_)
            return (torch.from_numpy(sims).to(self._device),
                    torch.from_numpy(idx).to(self._device, torch.long))
        sims, idx = [], []
        for s in range(0, Q.shape[0], self.batch_size):
            sv, iv = torch.topk(Q[s:s + self.batch_size] @ self._train.T, self.k_, dim=1)
            sims.append(sv)
            idx.append(iv)
        if not sims:
            return (torch.empty(0, self.k_, device=self._device),
                    torch.empty(0, self.k_, dtype=torch.long, device=self._device))
        return torch.cat(sims), torch.cat(idx)

    def _votes(self, X: Any) -> torch.Tensor:
        sims, idx = self.kneighbors(X)
        # exp(s/T) up to a per-row factor (cancels in the normalised votes; no overflow for small T)
        weights = (sims - sims[:, :1]).div_(self.temperature).exp_()
        votes = torch.zeros(sims.shape[0], len(self.classes_), device=sims.device)
        return votes.scatter_add_(1, self._y[idx], weights)

    def predict_proba(self, X: Any) -> Any:
        votes = self._votes(X)
        return _like_input(votes / votes.sum(dim=1, keepdim=True), X)

    def predict(self, X: Any) -> Any:
        pred = self.classes_[self._votes(X).argmax(dim=1).cpu().numpy()]
        return torch.as_tensor(pred, device=X.device) if isinstance(X, torch.Tensor) else pred

    def score(self, X: Any, y: Any) -> float:
        return float(np.mean(_to_numpy(self.predict(X)) == _to_numpy(y).reshape(-1)))
