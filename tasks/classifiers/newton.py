"""Truncated Newton (Newton-CG) for a batch of small logistic regressions solved together.

The K problems share the features X [N, D] and differ in their row weights (a cross-validation fold is a row
mask over the same X), their λ and, for multiclass folds, the classes their training rows contain. Their
weights are stacked as W [D, K, C], so every product with X is one wide [N, D] x [D, K·C] matmul for all of
them: for few-shot problems, where an iteration's arithmetic is tiny and its cost is the Python and dispatch
overhead of a few dozen tensor operations, K problems cost about as much as one.

Why Newton: with the literature's small λ (λ/N ~ 1e-6) a few-shot problem is nearly separable and badly
conditioned; L-BFGS then creeps (1,000 iterations at 4.7e-6 relative gradient on 160 x 96 x 10), while Newton
steps, whose Hessian products cost two matmuls each, reach 1e-6 in tens of iterations. The solve runs in the
principal axes of X (:func:`principal_axes`: min(N, D) unknowns per class, the same problem). The Newton system is
solved by conjugate gradients with a Jacobi (diagonal) preconditioner whose output is kept free of the softmax's
flat directions (:meth:`SoftmaxCurvature.project`), to a relative residual min(0.5, sqrt(relative gradient))
(superlinear convergence, Eisenstat & Walker) but no tighter than the tolerance needs; the step length by
backtracking (Armijo) on the logits Z + t·X D, which costs no matmul. Each problem stops on its own tolerance
and is then frozen: later iterations compute only the problems still running.

Measured on a 16-shot problem (160 x 384, 10 classes, λ = 2.5e-4; ``classifier_speed --grid``'s features): the
projection and the principal axes take the fit from 679 products with X [160 x 384] to 177 with X V [160 x 160]
(the grid's 15 problems in one solve: 5x faster), and the mae-tiny transfer record that stopped at 1,000 Newton
iterations (720 x 96 x 12, λ = 2.5e-7) converges in 159.
"""
from __future__ import annotations

import torch


class SoftmaxLosses:
    """Multiclass cross-entropy of K problems on logits Z [N, K, C].

    ``weights`` [N, K]: row i's weight in problem k (1/n_k on its training rows, 0 elsewhere);
    ``present`` [K, C] bool: the classes of problem k (a fold's fit knows only the classes of its training rows:
    the others get logit -inf, so their columns stay 0, as in a fit without them)."""

    def __init__(self, y: torch.Tensor, weights: torch.Tensor, present: torch.Tensor):
        self.y, self.weights, self.present = y, weights, present
        self.bias = torch.where(present, 0.0, -torch.inf).to(weights.dtype)

    def select(self, idx: torch.Tensor) -> "SoftmaxLosses":
        out = SoftmaxLosses.__new__(SoftmaxLosses)
        out.y, out.weights, out.present, out.bias = self.y, self.weights[:, idx], self.present[idx], self.bias[idx]
        return out

    def value(self, Z: torch.Tensor) -> torch.Tensor:
        """Σ_i w_ik CE_ik per problem [K]."""
        S, _, total = self._shifted(Z)
        return self._losses(S, total)

    def gradient(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(losses [K], R = dLoss/dZ [N, K, C], curvature state P = softmax)."""
        S, E, total = self._shifted(Z)
        loss = self._losses(S, total)
        P = E.div_(total)
        R = P.clone()
        R.scatter_add_(2, self._y(Z), torch.full((Z.shape[0], Z.shape[1], 1), -1.0, dtype=Z.dtype, device=Z.device))
        return loss, R.mul_(self.weights[..., None]), P

    def _shifted(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(S = the logits less their maximum, absent classes at -inf; exp S; Σ_c exp S). By hand: torch's
        log_softmax over 10 classes measured 3x slower on CPU (308 against 107 µs on [160, 15, 10] float64)."""
        S = Z + self.bias
        S = S.sub_(S.amax(2, keepdim=True))
        E = S.exp()
        return S, E, E.sum(2, keepdim=True)

    def _losses(self, S: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        nll = total[..., 0].log() - S.gather(2, self._y(S))[..., 0]
        return torch.where(self.weights > 0, nll * self.weights, 0.0).sum(0)

    def _y(self, Z: torch.Tensor) -> torch.Tensor:
        return self.y[:, None, None].expand(-1, Z.shape[1], 1)

    def curvature(self, P: torch.Tensor) -> "SoftmaxCurvature":
        return SoftmaxCurvature(P, P * self.weights[..., None], self.present.to(P.dtype)[None])


class SigmoidLosses:
    """One-vs-rest binary cross-entropy of K problems on logits Z [N, K, C]: ``S = 1 - 2Y`` [N, C], ``mask``
    [N, C] (1 = use the entry) or None, ``weights`` [N, K] as for :class:`SoftmaxLosses`."""

    def __init__(self, S: torch.Tensor, mask: torch.Tensor | None, weights: torch.Tensor):
        self.S, self.mask, self.weights = S, mask, weights
        w = weights[..., None]
        self.entry_weights = w if mask is None else w * mask[:, None, :]       # [N, K, 1 or C]

    def select(self, idx: torch.Tensor) -> "SigmoidLosses":
        return SigmoidLosses(self.S, self.mask, self.weights[:, idx])

    def value(self, Z: torch.Tensor) -> torch.Tensor:
        return self._losses(Z * self.S[:, None, :])

    def _losses(self, U: torch.Tensor) -> torch.Tensor:
        return (torch.nn.functional.softplus(U) * self.entry_weights).sum((0, 2))

    def gradient(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        U = Z * self.S[:, None, :]
        loss = self._losses(U)
        Q = U.sigmoid_()                                   # sigmoid(S z); sigmoid(z) - y = S sigmoid(S z)
        R = (Q * self.S[:, None, :]).mul_(self.entry_weights)
        return loss, R, Q * (1 - Q)                        # σ(z)(1 - σ(z)) = Q(1 - Q)

    def curvature(self, curvature: torch.Tensor) -> "DiagonalCurvature":
        return DiagonalCurvature(curvature * self.entry_weights)


class SoftmaxCurvature:
    """∇²Loss on the logits of K softmax problems: (∇²Loss) U = w ⊙ (P ⊙ U - P Σ_c P ⊙ U) = Pw ⊙ (U - Σ_c P ⊙ U),
    with Pw = w ⊙ P computed once per Newton iteration; ``select`` keeps some problems (those CG still runs)."""

    def __init__(self, P: torch.Tensor, Pw: torch.Tensor, present: torch.Tensor):
        self.P, self.Pw, self.present = P, Pw, present
        self.share = present / present.sum(2, keepdim=True)

    def select(self, keep: torch.Tensor) -> "SoftmaxCurvature":
        return SoftmaxCurvature(self.P[:, keep], self.Pw[:, keep], self.present[:, keep])

    def project(self, A: torch.Tensor) -> torch.Tensor:
        """A minus its mean over the problem's classes, in place: the loss is unchanged when the same vector is added
        to every class's weights, so the Hessian's only curvature along those directions is the penalty's (tiny at
        small λ). The gradient and every Newton direction have no component there, but a diagonal preconditioner's
        output does: left in, CG must resolve that near-null eigenvalue (measured: about 3x the CG steps)."""
        return A.sub_((A * self.present).sum(2, keepdim=True) * self.share)

    def __call__(self, U: torch.Tensor) -> torch.Tensor:
        return (U - (self.P * U).sum(2, keepdim=True)).mul_(self.Pw)

    def diagonal(self) -> torch.Tensor:
        """w ⊙ P ⊙ (1 - P) (the Jacobi preconditioner, with X²)."""
        return self.Pw * (1 - self.P)


class DiagonalCurvature:
    """∇²Loss on logits that is diagonal (one-vs-rest sigmoids): (∇²Loss) U = H ⊙ U."""

    def __init__(self, H: torch.Tensor):
        self.H = H

    def select(self, keep: torch.Tensor) -> "DiagonalCurvature":
        return DiagonalCurvature(self.H[:, keep])

    def __call__(self, U: torch.Tensor) -> torch.Tensor:
        return U * self.H

    def diagonal(self) -> torch.Tensor:
        return self.H

    def project(self, A: torch.Tensor) -> torch.Tensor:
        return A


def _per_problem(A: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce a [D or N, K, C] tensor to [K]."""
    return A.sum((0, 2)) if op == "sum" else A.abs().amax((0, 2))


def principal_axes(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(X V, V): the features in the orthonormal basis V [D, r] of their right singular vectors, r = min(N, D).

    Every iterate (from W = 0, or from a solution on the same X) lies in the span of X's rows, which V spans, and
    ||V B|| = ||B||: the problem in B = V^T W is the same problem with r <= N unknowns per class instead of D, and its
    coordinates are X's principal axes, along which the Jacobi preconditioner sees the spectrum of the features."""
    if X.shape[0] < X.shape[1]:   # V = X^T U S^-1 from the N x N Gram matrix, orthonormalised (largest first)
        V = torch.linalg.qr(X.T @ torch.linalg.eigh(X @ X.T)[1].flip(1))[0]
    else:
        V = torch.linalg.eigh(X.T @ X)[1].flip(1)
    return X @ V, V


def newton_cg(X: torch.Tensor, W: torch.Tensor, losses, regs: torch.Tensor, tol: float, max_iter: int,
              max_cg: int = 250, c1: float = 1e-4, max_backtracks: int = 60,
              axes: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[dict]:
    """Minimise F_k(W_k) = losses_k(X W_k) + regs_k/2 ||W_k||² for every problem k, updating W [D, K, C] in place.

    Problem k stops when ||∇F_k||_∞ <= tol · ||∇F_k(0)||_∞ ("converged"; the gradient in the coordinates of W),
    after ``max_iter`` Newton iterations ("max_iter"), or when no step along its Newton direction decreases F_k
    within rounding ("no_progress"). The solve runs on :func:`principal_axes` (``axes``: those of X, computed
    before; a caller solving several batches on the same X passes them). Returns one dict per problem: n_iter,
    objective, grad_norm, initial_grad_norm, status, and n_matmul (the wide matmuls of the whole batch while that
    problem ran).
    """
    d, k_all, c = W.shape
    F, V = principal_axes(X) if axes is None else axes
    B = (V.T @ W.reshape(d, -1)).view(-1, k_all, c)
    info = _solve(F, V, B, losses, regs, tol, max_iter, max_cg, c1, max_backtracks)
    W.copy_((V @ B.reshape(V.shape[1], -1)).view(d, k_all, c))
    return info


def _solve(F, V, B, losses, regs, tol, max_iter, max_cg, c1, max_backtracks) -> list[dict]:
    """:func:`newton_cg` on the features F [N, r] = X V, for B [r, K, C] (updated in place)."""
    n, r = F.shape
    k_all, c = B.shape[1], B.shape[2]
    FT, F2T = F.T.contiguous(), (F * F).T.contiguous()
    eps, tiny = torch.finfo(F.dtype).eps, torch.finfo(F.dtype).tiny

    def matmul(A: torch.Tensor) -> torch.Tensor:                   # [r, k, C] -> [N, k, C]
        return (F @ A.reshape(r, -1)).view(n, -1, c)

    def matmul_t(A: torch.Tensor, XT: torch.Tensor = FT) -> torch.Tensor:   # [N, k, C] -> [r, k, C]
        return (XT @ A.reshape(n, -1)).view(r, -1, c)

    def norm(G: torch.Tensor) -> torch.Tensor:                     # ||V G||_∞ per problem: in W's coordinates
        return _per_problem((V @ G.reshape(r, -1)).view(-1, G.shape[1], c), "max")

    # ||V G||_∞ >= ||G||_2 / sqrt(D C): a problem whose ||G||_2 is above this bound has not converged, and its
    # ∞-norm (one more product, with V) is not needed
    spread = (V.shape[0] * c) ** 0.5
    zero = torch.zeros(n, k_all, c, dtype=F.dtype, device=F.device)
    G0 = matmul_t(losses.gradient(zero)[1])
    g0, g2_0 = norm(G0), torch.linalg.vector_norm(G0, dim=(0, 2))
    info = [{"n_iter": 0, "n_matmul": 1, "status": "max_iter", "initial_grad_norm": float(g0[k])}
            for k in range(k_all)]
    act = torch.arange(k_all, device=F.device)
    for it in range(max_iter + 1):
        loss_a, reg_a, Ba = losses.select(act), regs[act], B[:, act]
        Z = matmul(Ba)
        f_loss, R, curv = loss_a.gradient(Z)
        f = f_loss + 0.5 * reg_a * _per_problem(Ba * Ba)
        G = matmul_t(R).add_(Ba * reg_a[None, :, None])
        g2 = torch.linalg.vector_norm(G, dim=(0, 2))
        g_norm = torch.full_like(g2, torch.inf)
        check = (g2 <= tol * g0[act] * spread) if it < max_iter else torch.ones_like(g2, dtype=torch.bool)
        if bool(check.any()):
            g_norm[check] = norm(G[:, check])
        done = (g_norm <= tol * g0[act]) | (it == max_iter)
        for j in torch.nonzero(done).flatten().tolist():
            k = int(act[j])
            info[k].update(objective=float(f[j]), grad_norm=float(g_norm[j]), n_iter=it,
                           status="converged" if g_norm[j] <= tol * g0[k] else "max_iter")
        _count(info, act, 2)
        if bool(done.all()):
            break
        keep = (~done).nonzero()[:, 0]
        act, reg_a, Ba, g2, g_norm = act[keep], reg_a[keep], Ba[:, keep], g2[keep], g_norm[keep]
        loss_a, Z, G, curv, f = loss_a.select(keep), Z[:, keep], G[:, keep], curv[:, keep], f[keep]

        # the Newton direction: H D = -G by preconditioned conjugate gradients, batched, each problem to its own
        # relative residual min(0.5, sqrt(||G||_2 / ||G(0)||_2)), but not below half the tolerance's gradient (a
        # residual that small already passes the stopping rule, as ||V r||_∞ <= ||r||_2)
        curvature = loss_a.curvature(curv)
        hess = HessianProducts(F, FT, curvature, reg_a)
        precond = matmul_t(curvature.diagonal(), F2T).add_(reg_a[None, :, None])
        eta = torch.maximum((g2 / g2_0[act]).sqrt(), 0.5 * tol * g0[act] / g2.clamp_min(tiny)).clamp(max=0.5)
        D, cg_matmuls = _conjugate_gradients(hess, -G, precond, eta * g2, max_cg)
        ZD = matmul(D)
        _count(info, act, cg_matmuls + 2)   # the preconditioner's product with F² and F D

        # step length: backtracking from the Newton step t = 1, on the logits alone
        gd, wd, dd, ww = (_per_problem(a * b) for a, b in ((G, D), (Ba, D), (D, D), (Ba, Ba)))
        t = torch.ones_like(f)
        accepted = torch.zeros_like(f, dtype=torch.bool)
        noise = 8 * eps * f.abs()
        for _ in range(max_backtracks):
            ft = loss_a.value(Z + t[None, :, None] * ZD) + 0.5 * reg_a * (ww + 2 * t * wd + t * t * dd)
            accepted |= (ft <= f + c1 * t * gd) | (ft <= f + noise)
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, 0.5 * t)
        t = torch.where(accepted, t, 0.0)
        B[:, act] = Ba + t[None, :, None] * D
        for j in torch.nonzero(~accepted).flatten().tolist():   # no decrease measurable: stop it there
            k = int(act[j])
            info[k].update(objective=float(f[j]), grad_norm=float(norm(G[:, j:j + 1])[0]), n_iter=it + 1,
                           status="no_progress")
        act = act[accepted]
        if len(act) == 0:
            break
    return info


class HessianProducts:
    """H V = F^T (∇²Loss (F V)) + reg V for the problems of a batch (the middle axis of V [r, k, C]); ``select``
    keeps some of them."""

    def __init__(self, F: torch.Tensor, FT: torch.Tensor, curvature, regs: torch.Tensor):
        self.F, self.FT, self.curvature, self.regs = F, FT, curvature, regs[None, :, None]

    def select(self, keep: torch.Tensor) -> "HessianProducts":
        return HessianProducts(self.F, self.FT, self.curvature.select(keep), self.regs[0, keep, 0])

    def __call__(self, V: torch.Tensor) -> torch.Tensor:
        (n, r), c = self.F.shape, V.shape[2]
        U = self.curvature((self.F @ V.reshape(r, -1)).view(n, -1, c))
        return (self.FT @ U.reshape(n, -1)).view(r, -1, c).addcmul_(V, self.regs)


def _count(info: list[dict], act: torch.Tensor, matmuls: int) -> None:
    for k in act.tolist():
        info[k]["n_matmul"] += matmuls


def _conjugate_gradients(hess: HessianProducts, B: torch.Tensor, precond: torch.Tensor, target: torch.Tensor,
                         max_iter: int) -> tuple[torch.Tensor, int]:
    """Solve hess(X) = B for each problem (the middle axis of [r, K, C]) by Jacobi-preconditioned CG, stopping problem
    k when ||residual_k||_2 <= target_k; returns (X, number of matmuls). A problem that stops is frozen (step 0),
    and once a quarter of the columns are frozen they are dropped (with their Hessian products), so a product with
    F is about as wide as the problems still running, without paying the dozen gathers of a compaction per stop."""
    out = torch.zeros_like(B)
    run = torch.arange(B.shape[1], device=B.device)        # the problems still in the arrays
    live = torch.ones_like(run, dtype=torch.bool)           # those of them not at their target yet
    Xs, R = torch.zeros_like(B), B.clone()
    Zp = hess.curvature.project(R / precond)
    P = Zp.clone()
    rz = _per_problem(R * Zp)
    tiny = torch.finfo(B.dtype).tiny
    matmuls = 0
    for _ in range(max_iter):
        HP = hess(P)
        matmuls += 2
        php = _per_problem(P * HP)
        live &= php > 0
        alpha = torch.where(live, rz / php, 0.0)[None, :, None]
        Xs.addcmul_(P, alpha)
        R.addcmul_(HP, alpha, value=-1.0)
        live &= torch.linalg.vector_norm(R, dim=(0, 2)) > target
        running = int(live.sum())
        if running == 0:
            break
        if 4 * (len(run) - running) >= len(run):
            keep, gone = live.nonzero()[:, 0], (~live).nonzero()[:, 0]
            out[:, run[gone]] = Xs[:, gone]
            run, Xs, R, P, rz, target = run[keep], Xs[:, keep], R[:, keep], P[:, keep], rz[keep], target[keep]
            precond, hess, live = precond[:, keep], hess.select(keep), live[keep]
        Zp = hess.curvature.project(R / precond)
        rz_new = _per_problem(R * Zp)
        P = Zp.addcmul_(P, (rz_new / rz.clamp_min(tiny))[None, :, None])
        rz = rz_new
    out[:, run] = Xs
    return out, matmuls
