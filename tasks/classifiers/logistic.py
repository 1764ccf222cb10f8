"""Per-sample preprocessing and L2-regularised logistic regression (multinomial or one-vs-rest multi-label).

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

import warnings
from typing import Any

import numpy as np
import torch

from ..metrics import mean_average_precision
from .arrays import check_2d, like_input, resolve_device, to_numpy, to_tensor
from .newton import SigmoidLosses, SoftmaxLosses, newton_cg
from .solver import feature_preconditioner, lbfgs_linear, sigmoid_bce_, softmax_ce_, threads_for

#: Default λ (the total penalty, before the division by N that MSN applies): MSN's README value for 1/2/5 images
#: per class, the fallback wherever λ cannot be cross-validated.
DEFAULT_LAMBDA = 0.0025

#: Largest problem (N · D · classes) that ``solver="auto"`` fits by Newton-CG in float64: the few-shot problems,
#: small and badly conditioned, where L-BFGS may stop at max_iter; larger ones are fit by float32 L-BFGS.
NEWTON_MAX_SIZE = 1 << 24
SOLVERS = ("auto", "newton", "lbfgs")


def preprocess(X: Any) -> Any:
    """Per-sample centring and L2 normalisation (MSN / cyanure ``columns=False``).

    Each row gets its own mean subtracted, then is divided by its L2 norm. numpy input returns a
    new float32 array; torch input returns a new tensor with the same dtype and device (computed in
    float32 at least). A row that is constant (zero after centring) stays all-zero. Raises
    ``ValueError`` if any feature is NaN or infinite.
    """
    check_2d(X)
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

    Solver (``solver="auto"``): problems with N · D · classes <= ``NEWTON_MAX_SIZE`` (the few-shot ones) by
    Newton-CG in float64 (:mod:`.newton`; nearly separable and badly conditioned, L-BFGS may stop at max_iter on
    them, Newton reaches the tolerance in tens of iterations), larger ones by L-BFGS; ``"newton"`` or ``"lbfgs"``
    forces one. L-BFGS: full-batch in torch (float32 by default, ``dtype=torch.float64`` optional; CPU
    or CUDA), started from W = 0, with the loss and gradient computed by hand (no autograd), its quasi-Newton
    model built in coordinates preconditioned by the features' second moment (``solver.feature_preconditioner``:
    measured on features with decaying spectra, 2.5-10x fewer iterations; nearly isotropic ones are left as
    they were). Since the model is linear, the line search moves along precomputed logits Z + t·X D, so an iteration
    costs two [N, D] x [D, C] matmuls plus a few cheap passes over the [N, C] logits. Memory: three
    [N, C] buffers in the working dtype and 2·history_size float64 [D, C] curvature vectors.

    Stopping rule (default ``tol=1e-6``): stop at the first iterate with relative gradient norm
    ``||∇F(W)||_∞ / ||∇F(0)||_∞ <= tol``, i.e. the largest entry of the gradient has fallen by a
    factor 10^6 from the start; F and ∇F are recomputed from scratch before this is declared.
    ``converged_`` is True iff it holds at the returned W. The solver also stops at ``max_iter``
    iterations or when no decrease can be measured any more (float32 reaches ~1e-7 relative
    gradient); both count as not converged and emit a ``RuntimeWarning``. Why relative gradient:
    with the literature's small λ (λ/N ~ 1e-6..1e-7) the problem is nearly separable, ||W|| at the
    optimum is large and the objective is very flat, so a rule on objective decrease stops at
    arbitrary points; the gradient test is scale-free (independent of N, C and of λ). Why 1e-6:
    measured against float64 fits at 1e-10 on ImageNet-shaped problems (768-d, 1000 classes, 10,000
    held-out), 1e-4 left 12 (1 image per class) and 5 (5 per class) held-out predictions different
    from the exact optimum's, 1e-6 at most 1, as many as 1e-6 noise on the input features moves;
    on the embedded multi-label task 1e-4 moved a 5-shot mAP by up to 2e-3, 1e-6 by < 1e-4. It
    costs 1.5-1.8x the time of 1e-4 (1 %-ImageNet shape, 12,811 x 768: 21.9 s vs 11.9 s on one
    CPU thread). ``tol=1e-7`` is near float32's floor and costs 3-6x; use ``dtype=torch.float64``
    for tighter fits.

    ``device``: None = the device of a torch ``X``, else CPU; "cuda" raises if CUDA is absent.
    ``history_size``: number of L-BFGS curvature pairs kept (10, as scikit-learn's and SciPy's L-BFGS: on seven
    problem shapes, 20 took from 7 % fewer to 6 % more iterations and reads twice the memory per iteration).
    ``solver_`` after ``fit``: "newton-cg" or "lbfgs".

    After ``fit``: ``coef_`` [D, C] (numpy, like cyanure's ``coef_``), ``classes_``, ``n_iter_``
    (L-BFGS iterations), ``n_matmul_`` ([N, D] x [D, C] products, the cost unit), ``grad_norm_``
    (∞-norm of the final gradient), ``rel_grad_norm_`` (divided by the ∞-norm at W = 0),
    ``objective_`` (final F(W)), ``converged_``, ``stop_reason_`` ("converged", "max_iter" or
    "no_progress"). ``convergence_info()`` returns them as a dict for result records.
    """

    def __init__(self, lambd: float = DEFAULT_LAMBDA, max_iter: int = 1000, tol: float = 1e-6,
                 device: Any = None, multilabel: bool = False, dtype: torch.dtype = torch.float32,
                 history_size: int = 10, solver: str = "auto"):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.solver = solver
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
        check_2d(X)
        dev = resolve_device(self.device, X)
        Xt = to_tensor(X, dev, self.dtype).contiguous()
        if not bool(torch.isfinite(Xt).all()):
            raise ValueError("X contains NaN/inf")
        n, d = Xt.shape
        if n == 0:
            raise ValueError("cannot fit on 0 samples")
        reg = self.lambd / n
        loss_fn, g0, targets = self._problem(Xt, y, mask, self.dtype)
        if self.uses_newton(n, d, len(self.classes_)):
            self._fit_newton(Xt, targets, reg)
            return self._finish()
        W = torch.zeros(d, len(self.classes_), dtype=self.dtype, device=dev)
        with threads_for(Xt.numel() * W.shape[1], Xt.device):
            Q = feature_preconditioner(Xt)
            info = lbfgs_linear(Xt, W, loss_fn, reg, self.tol, g0, self.max_iter, self.history_size, precondition=Q)
            self.precision_ = str(self.dtype).replace("torch.", "")
            if info["status"] == "no_progress" and self.dtype != torch.float64:
                # float32 cannot measure a further decrease: go on in float64 from where it stopped
                X64, W64 = Xt.double(), W.double()
                loss64 = self._problem(X64, y, mask, torch.float64)[0]
                more = lbfgs_linear(X64, W64, loss64, reg, self.tol, g0, max(1, self.max_iter - info["n_iter"]),
                                    self.history_size, precondition=Q)
                info = {**more, "n_iter": info["n_iter"] + more["n_iter"],
                        "n_matmul": info["n_matmul"] + more["n_matmul"]}
                W, self.precision_ = W64, f"{self.precision_}, then float64"
        self._set_solution(W, {**info, "initial_grad_norm": g0}, "lbfgs")
        return self._finish()

    def uses_newton(self, n: int, d: int, n_classes: int) -> bool:
        """Whether a fit of n x d features and `n_classes` classes runs Newton-CG (float64) rather than L-BFGS."""
        return self.solver == "newton" or (self.solver == "auto" and n * d * n_classes <= NEWTON_MAX_SIZE)

    def _fit_newton(self, Xt: torch.Tensor, targets: tuple, reg: float) -> None:
        X64 = Xt.double()
        n, c = X64.shape[0], len(self.classes_)
        losses = batch_losses(targets, torch.full((n, 1), 1.0 / n, dtype=torch.float64, device=X64.device))
        W = torch.zeros(X64.shape[1], 1, c, dtype=torch.float64, device=X64.device)
        with threads_for(X64.numel() * c, X64.device):
            info = newton_cg(X64, W, losses, torch.tensor([reg], dtype=torch.float64, device=X64.device),
                             self.tol, self.max_iter)[0]
        self.precision_ = "float64"
        self._set_solution(W[:, 0], info, "newton-cg")

    def _set_solution(self, W: torch.Tensor, info: dict, solver: str) -> None:
        g0 = info["initial_grad_norm"]
        self._W = W
        self.coef_ = W.cpu().numpy()
        self.solver_ = solver
        self.n_iter_ = info["n_iter"]
        self.n_matmul_ = info["n_matmul"]
        self.objective_ = info["objective"]
        self.initial_grad_norm_ = g0
        self.grad_norm_ = info["grad_norm"]
        self.rel_grad_norm_ = self.grad_norm_ / g0 if g0 > 0 else 0.0
        self.stop_reason_ = info["status"]
        self.converged_ = info["status"] == "converged"

    def _finish(self) -> "LogisticRegression":
        if not self.converged_:
            why = {"max_iter": "max_iter reached",
                   "no_progress": "no further decrease possible at this floating-point precision"}
            warnings.warn(
                f"LogisticRegression did not converge: stopped after {self.n_iter_} iterations with "
                f"relative gradient norm {self.rel_grad_norm_:.2e} > tol={self.tol:g} "
                f"({why[self.stop_reason_]})", RuntimeWarning, stacklevel=3)
        return self

    def _problem(self, Xt: torch.Tensor, y: Any, mask: Any, dtype: torch.dtype):
        """(loss function on logits, ||∇F(0)||_∞, targets for :func:`batch_losses`) of the fit in `dtype`; sets
        ``classes_``."""
        n, d = Xt.shape
        dev = Xt.device
        if self.multilabel:
            Y = to_tensor(y, dev, dtype)
            check_2d(Y, "y")
            if Y.shape[0] != n:
                raise ValueError(f"X has {n} rows but y has {Y.shape[0]}")
            if not bool(((Y == 0) | (Y == 1)).all()):
                raise ValueError("multilabel y must contain only 0/1")
            M = None
            if mask is not None:
                M = to_tensor(mask, dev).to(torch.bool)
                if tuple(M.shape) != tuple(Y.shape):
                    raise ValueError(f"mask shape {tuple(M.shape)} != y shape {tuple(Y.shape)}")
                Y = torch.where(M, Y, torch.zeros_like(Y))   # masked entries carry no label
                M = M.to(dtype)
            self.classes_ = np.arange(Y.shape[1])
            S = 1.0 - 2.0 * Y

            def loss_fn(Z):
                return sigmoid_bce_(Z, S, M)

            # at W = 0 every sigmoid is 1/2: ∇F(0) = X^T (m ⊙ (1/2 - Y)) / N
            R0 = 0.5 - Y if M is None else M * (0.5 - Y)
            grad0 = Xt.T @ R0 / n
            targets = ("sigmoid", S, M)
        else:
            if mask is not None:
                raise ValueError("mask is only supported with multilabel=True")
            y_np = to_numpy(y).reshape(-1)
            if y_np.shape[0] != n:
                raise ValueError(f"X has {n} rows but y has {y_np.shape[0]}")
            self.classes_, y_idx = np.unique(y_np, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError("need at least 2 classes to fit a classifier")
            y_t = torch.as_tensor(y_idx.reshape(-1), dtype=torch.long, device=dev)

            def loss_fn(Z):
                return softmax_ce_(Z, y_t)

            # at W = 0 every softmax is 1/C: ∇F(0) = (X^T 1 1^T / C - X^T Y) / N, no matmul needed
            n_cls = len(self.classes_)
            # index_put_(accumulate) rather than index_add_: the same sums, but index_add_ costs ~60 ms on CPU
            # however small the problem (torch 2.14), which dominated the many small fits of k-shot CV
            class_sums = torch.zeros(n_cls, d, dtype=dtype, device=dev).index_put_((y_t,), Xt, accumulate=True)
            grad0 = (Xt.sum(dim=0)[:, None] / n_cls - class_sums.T) / n
            targets = ("softmax", y_t, n_cls)
        return loss_fn, float(grad0.abs().max()), targets

    def convergence_info(self) -> dict:
        """Convergence record for result files (plain Python types)."""
        self._check_fitted()
        return {
            "solver": self.solver_,
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
            "dtype": self.precision_,
        }

    # ---------------------------------------------------------------- inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "_W"):
            raise RuntimeError("LogisticRegression is not fitted yet; call fit() first")

    def _logits(self, X: Any) -> torch.Tensor:
        self._check_fitted()
        check_2d(X)
        Xt = to_tensor(X, self._W.device, self._W.dtype)
        if Xt.shape[1] != self._W.shape[0]:
            raise ValueError(f"X has {Xt.shape[1]} features, the model was fit on {self._W.shape[0]}")
        with threads_for(Xt.numel() * self._W.shape[1], Xt.device):
            return Xt @ self._W

    def decision_function(self, X: Any) -> Any:
        """Logits [N, C]."""
        return like_input(self._logits(X), X)

    def predict_proba(self, X: Any) -> Any:
        """Softmax probabilities (multiclass) or per-class sigmoids (multilabel), [N, C]."""
        Z = self._logits(X)
        P = torch.sigmoid(Z) if self.multilabel else torch.softmax(Z, dim=1)
        return like_input(P, X)

    def predict(self, X: Any) -> Any:
        """Labels from ``classes_`` [N] (multiclass) or a {0,1} matrix [N, C] (multilabel, p > 0.5)."""
        Z = self._logits(X)
        if self.multilabel:
            return like_input((Z > 0).to(torch.int64), X)
        pred = self.classes_[Z.argmax(dim=1).cpu().numpy()]
        return torch.as_tensor(pred, device=X.device) if isinstance(X, torch.Tensor) else pred

    def score(self, X: Any, y: Any, mask: Any = None) -> float:
        """Accuracy (multiclass) or, as a fraction, the mAP over classes with an (unmasked) positive
        (multilabel; ``mask`` False = ignore that entry). Both are fractions in [0, 1]."""
        if self.multilabel:
            return multilabel_score(to_numpy(self.decision_function(X)), y, mask)
        if mask is not None:
            raise ValueError("mask is only supported with multilabel=True")
        return float(np.mean(to_numpy(self.predict(X)) == to_numpy(y).reshape(-1)))


def multilabel_score(logits: np.ndarray, y: Any, mask: Any = None) -> float:
    """mAP over classes with an (unmasked) positive, as a fraction; ``mask`` False = ignore that entry."""
    ignore = None if mask is None else ~to_numpy(mask).astype(bool)
    with warnings.catch_warnings():  # a small held-out fold leaves classes without a positive
        warnings.simplefilter("ignore", RuntimeWarning)
        return mean_average_precision(logits, to_numpy(y), ignore)[0] / 100


def batch_losses(targets: tuple, weights: torch.Tensor, present: torch.Tensor | None = None):
    """The losses of K problems over the same rows for :func:`newton_cg`: ``targets`` from
    ``LogisticRegression._problem`` (in float64), ``weights`` [N, K] row weights, ``present`` [K, C] the classes
    of each multiclass problem (default: all)."""
    if targets[0] == "sigmoid":
        _, S, M = targets
        return SigmoidLosses(S.double(), None if M is None else M.double(), weights)
    _, y_t, n_cls = targets
    if present is None:
        present = torch.ones(weights.shape[1], n_cls, dtype=torch.bool, device=weights.device)
    return SoftmaxLosses(y_t, weights, present)
