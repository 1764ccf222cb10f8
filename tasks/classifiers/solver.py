"""The solver core of the logistic regressions: losses on logits and a full-batch L-BFGS for linear models."""
from __future__ import annotations

import math

import torch

#: below this probability a float32 log loses digits to subnormals: the loss is computed from the logits' gap
_TINY = 1e-30


# The loss functions work in place on a scratch copy of the logits: on CPU, allocating a fresh
# [N, C] tensor costs more than the arithmetic on it (page faults), so the solver keeps buffers.
def softmax_ce_(Z: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Σ_i CE(y_i, z_i) and R = dLoss/dZ = softmax(Z) - onehot(y), computed in Z's storage.

    The softmax is torch's fused kernel, run in place (each row is read for its maximum and sum before it is
    written): about half the time of separate max / exp / sum / divide passes over [N, C]. Precision matters near
    the optimum, where the true class takes almost all the mass: the loss is log1p(Σ_{c≠y} p_c / p_y) and R's
    true-class entry -Σ_{c≠y} p_c, both without the cancellation of log(Σ_c ...) or p_y - 1 in float32. Where
    p_y underflows (a true logit far below the row's maximum) the loss is (z_max - z_y) + log Σ_c e^{z_c - z_max},
    the sum being 1 / max_c p_c.
    """
    y1 = y[:, None]
    gap = Z.amax(dim=1, keepdim=True).sub_(Z.gather(1, y1))   # z_max - z_y >= 0, before Z is overwritten
    P = torch.ops.aten._softmax.out(Z, 1, False, out=Z)
    p_true = P.gather(1, y1)
    P.scatter_(1, y1, 0.0)
    rest = P.sum(dim=1, keepdim=True)           # Σ_{c≠y} p_c
    loss = torch.where(p_true > 0.5, torch.log1p(rest / p_true), -p_true.log())
    tiny = (p_true < _TINY)[:, 0].nonzero()[:, 0]
    if len(tiny):
        loss[tiny] = gap[tiny] - P[tiny].amax(dim=1, keepdim=True).log()
    P.scatter_(1, y1, -rest)
    return float(loss.sum(dtype=torch.float64)), P


def sigmoid_bce_(Z: torch.Tensor, S: torch.Tensor, M: torch.Tensor | None) -> tuple[float, torch.Tensor]:
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


def _rowdot(A: torch.Tensor, B: torch.Tensor, block: int = 1 << 16) -> float:
    """<A, B> for large [N, C] tensors: a BLAS dot per block of rows (~64k entries) in the input dtype, the blocks
    summed in float64 (the error of one float32 dot over all N·C entries grows with its length; this one's stays
    at a block's)."""
    rows = max(1, block // max(1, A.shape[1]))
    return math.fsum(float(torch.dot(A[s:s + rows].reshape(-1), B[s:s + rows].reshape(-1)))
                     for s in range(0, A.shape[0], rows))


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

    def push(self, s: torch.Tensor, y: torch.Tensor, g_next: torch.Tensor) -> torch.Tensor:
        """Store the pair (s, y); returns [S'g; Y'g] for the gradient g_next that the next :meth:`apply` takes,
        from the same pass over the buffer (the buffer, 2m x P in float64, is the largest array an iteration
        reads after X and the logits)."""
        m = self.m
        r = self.order.pop(0) if len(self.order) == m else len(self.order)
        self.buf[r], self.buf[m + r] = s, y
        prods = self.buf @ torch.stack([s, y, g_next], dim=1)  # [2m, 3]: s_i's, s_i'y, s_i'g; y_i's, y_i'y, y_i'g
        self.SY[r, :] = prods[m:, 0]
        self.SY[:, r] = prods[:m, 1]
        self.YY[r, :] = self.YY[:, r] = prods[m:, 1]
        self.order.append(r)
        return prods[:, 2]

    def __len__(self) -> int:
        return len(self.order)

    def apply(self, g: torch.Tensor, products: torch.Tensor | None = None) -> torch.Tensor:
        """H g (for an empty memory: g); ``products``: [S'g; Y'g] if :meth:`push` already computed them."""
        if not self.order:
            return g.clone()
        m, idx = self.m, torch.tensor(self.order, device=g.device)
        ab = self.buf @ g if products is None else products     # [S'g; Y'g] in buffer order
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


class threads_for:
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


#: `feature_preconditioner` leaves features whose largest second-moment eigenvalue is at most this many times the
#: mean to plain L-BFGS (Q's condition number would be at most 1 + this)
NEARLY_ISOTROPIC = 4.0


def feature_preconditioner(X: torch.Tensor) -> torch.Tensor | None:
    """Q = (C + μI)^(-1/2) in float64, scaled to a unit mean diagonal: C = XᵀX / N (the features' second moment),
    μ = tr(C) / D (its mean eigenvalue). `lbfgs_linear` builds its quasi-Newton model in the coordinates V = Q⁻¹ W.

    Why: the cross-entropy's curvature along a feature direction scales with its variance, and backbone features
    have decaying spectra (λ_max(C) = 31-94 μ for the embedded tiny models' 96-d features): plain L-BFGS then needs
    hundreds of iterations or stops at max_iter. Why the shrinkage μ: the softmax's curvature is not the covariance
    (it concentrates on the uncertain samples), and whitening fully costs iterations even on isotropic features.
    Measured on 12,811 x 384, 1,000 classes: μ = mean eigenvalue takes features with variance ∝ j^-2 from 426
    iterations to 43 (∝ j^-1: 86 to 35); μ = 1e-2 and 1e-4 x the mean took isotropic features from 28 to 39 and 291.
    None (plain L-BFGS) for nearly isotropic features, λ_max(C) <= NEARLY_ISOTROPIC μ (those 28 iterations either
    way, and Q would cost two products per iteration), and for all-zero ones."""
    cov = torch.mm(X.T, X).double().div_(X.shape[0])
    eigenvalues, U = torch.linalg.eigh(cov)
    eigenvalues = eigenvalues.clamp_min(0)
    shrink = float(eigenvalues.mean())
    if not float(eigenvalues[-1]) > NEARLY_ISOTROPIC * shrink:
        return None
    Q = (U * (eigenvalues + shrink).rsqrt()) @ U.T
    return Q.div_(Q.diagonal().mean())


def lbfgs_linear(X, W, loss_fn, reg, tol, g0_norm, max_iter, history_size, c2=0.1, c2_first=1e-3,
                  refresh=20, precondition: torch.Tensor | None = None):
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

    ``precondition`` (Q, [D, D], `feature_preconditioner`): the quasi-Newton model is built in the coordinates
    V = Q⁻¹ W (gradients Q ∇F, steps Q⁻¹ s, directions mapped back by Q); everything else, the stopping rule
    included, stays in W's. Two [D, D] x [D, C] float64 products per iteration.

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

    Q = precondition

    def times_q(A):                             # a gradient into V's coordinates, a direction out of them
        return A if Q is None else torch.mm(Q, A)

    f, G = exact()
    GV = times_q(G)                             # the gradient in V's coordinates
    g_products = None                           # [S'GV; Y'GV] of the current GV, when the last push computed them
    n_matmul, stale, it, status = 2, 0, 0, "max_iter"
    while True:
        if float(G.abs().max()) <= tol * g0_norm:
            if stale == 0:
                status = "converged"
                break
            (f, G), n_matmul, stale = exact(), n_matmul + 2, 0   # re-check without drift
            GV, g_products = times_q(G), None
            continue
        if it >= max_iter:
            break
        DV = -memory.apply(GV.reshape(-1), g_products).reshape(G.shape)   # D = -Q H Q ∇F
        D = times_q(DV)
        gtd = _dot(G, D)
        if gtd >= 0:                            # not a descent direction (numerics): restart
            memory = _LBFGSMemory(history_size, W.numel(), W.device)
            DV = -GV
            D = times_q(DV)
            gtd = _dot(G, D)
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
        GV_new = times_q(G_new)
        n_matmul += 1
        s_vec, y_vec = DV.mul_(t).reshape(-1), (GV_new - GV).reshape(-1)
        sy = _dot(s_vec, y_vec)
        g_products = None
        if sy > 1e-10 * _dot(y_vec, y_vec):     # usable curvature pair (always, F is convex)
            g_products = memory.push(s_vec, y_vec, GV_new.reshape(-1))
        f, G, GV = f_new, G_new, GV_new
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
        if math.isinf(hi):                      # still descending: the secant root of φ', 1.1x..100x
            t_sec = lo - d_lo * (lo - prev) / (d_lo - d_prev) if d_lo > d_prev else math.inf
            t = min(max(t_sec, 1.1 * lo), 100.0 * lo)
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
