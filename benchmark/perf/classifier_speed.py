"""Speed and agreement of the logistic-regression probe: ours vs scikit-learn vs cyanure (MSN).

    python -m lowshot.benchmark.perf.classifier_speed            # 1 %-ImageNet shape: 12811 x 384, 1000 classes
    python -m lowshot.benchmark.perf.classifier_speed --small    # 2000 x 128, 100 classes (CI-sized, < 1 min)
    python -m lowshot.benchmark.perf.classifier_speed --grid     # 16 shots: 160 x 384, 10 classes, 5 λ x 3 folds

``--grid`` times the cross-validation of λ on a few-shot problem (features with a decaying spectrum, like a
backbone's): the 15 (λ, fold) problems in one batched solve against one fit, against 15 separate fits (the
default solver) and against 15 separate L-BFGS fits (how every fit was solved before), and prints one
``name: ratio`` line each, the time of one fit against its matmul floor (its products with X, timed alone; for
Newton-CG, X in its principal axes) included. Medians of ``--repeats`` runs.

Random features shaped like a low-shot linear probe (Gaussian class means + isotropic noise,
preprocessed per sample: centred, unit norm) and a held-out set from the same distribution. All
three solvers minimise the same objective, mean cross-entropy + (λ/N)/2 ||W||², no intercept:

* ours: ``tasks.classifiers.LogisticRegression(lambd=λ)`` (torch L-BFGS, default stopping rule);
* scikit-learn: ``LogisticRegression(C=1/λ, fit_intercept=False, tol=1e-6)`` (lbfgs);
* cyanure: ``Classifier(loss="multiclass-logistic", penalty="l2", lambda_1=λ/N,
  fit_intercept=False, tol=1e-3, max_iter=300, duality_gap_interval=10)`` as in MSN's
  ``logistic_eval.py``, run in a subprocess (it ships its own OpenBLAS/OpenMP, which breaks
  torch's CPU bf16 matmul in the same process) and timed inside it around ``fit`` only.

Each solver's objective is re-evaluated here in float64 on its returned weights, so the column
is comparable. Nothing is asserted about speed; the numbers depend on the machine and its load.
On a machine shared with other busy processes, torch's OpenMP workers spin-waiting between ops
can cost milliseconds per small op; ``OMP_WAIT_POLICY=PASSIVE`` (set before Python starts)
avoids that.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings

import numpy as np
import torch

from lowshot.benchmark.perf.timing import sync

from lowshot.tasks.classifiers import DEFAULT_LAMBDA, LogisticRegression, preprocess
from lowshot.tasks.classifiers.newton import principal_axes
from lowshot.tasks.classifiers.selection import BatchedFolds, SeparateFolds, cv_splits
from lowshot.tasks.classifiers.solver import threads_for

#: the λ grid the transfer family cross-validates
GRID = (0.00025, 0.0025, 0.025, 0.25, 2.5)


def make_features(n: int, dim: int, classes: int, n_test: int, noise: float, seed: int = 0):
    """Class means ~ N(0, I/dim), samples = mean + noise · N(0, I/dim); every class in the train set."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, dim)).astype(np.float32) / np.sqrt(dim)

    def draw(m):
        y = np.concatenate([np.arange(classes), rng.integers(0, classes, max(0, m - classes))])[:m]
        X = means[y] + noise * rng.standard_normal((len(y), dim)).astype(np.float32) / np.sqrt(dim)
        return preprocess(X), y

    Xtr, ytr = draw(n)
    Xte, yte = draw(n_test)
    return Xtr, ytr, Xte, yte


def spectrum_features(n: int, dim: int, classes: int, noise: float = 3.0, decay: float = 1.0, seed: int = 0):
    """Few-shot features with a decaying spectrum (feature j scaled by j^-decay, like a backbone's few strong
    directions and long tail), preprocessed; n // classes images of every class."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, dim))
    y = np.arange(n) % classes
    X = (means[y] + noise * rng.standard_normal((n, dim))) * np.arange(1, dim + 1) ** -decay
    return preprocess(X.astype(np.float32)), y


def _median_seconds(fn, device: str, repeats: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def matmul_floor(fit: LogisticRegression, X: np.ndarray, device: str, repeats: int = 5) -> float:
    """Seconds of the fit's products with X alone: n_matmul x the mean of one X W and one X^T R, in the fit's
    working dtype, on its device (Newton-CG: float64, with X in its principal axes, [N, min(N, D)])."""
    newton = fit.solver_ == "newton-cg"
    Xt = torch.as_tensor(X, dtype=torch.float64 if newton else fit.dtype, device=device)
    if newton:
        Xt = principal_axes(Xt)[0]
    W = torch.randn(Xt.shape[1], len(fit.classes_), dtype=Xt.dtype, device=device)
    R = torch.randn(Xt.shape[0], len(fit.classes_), dtype=Xt.dtype, device=device)
    with threads_for(Xt.numel() * W.shape[1], Xt.device):   # the threads the fit ran on
        forward = _median_seconds(lambda: Xt @ W, device, repeats)[0]
        backward = _median_seconds(lambda: Xt.T @ R, device, repeats)[0]
    return fit.n_matmul_ * (forward + backward) / 2


def grid_ratios(X: np.ndarray, y: np.ndarray, lambd: float, device: str, repeats: int) -> dict:
    """{name: ratio} of the λ grid's cross-validation (5 λ x 3 folds) against one fit and separate fits."""
    splits = cv_splits(y, 3, 0, False)
    quiet = warnings.catch_warnings()
    with quiet:
        warnings.simplefilter("ignore", RuntimeWarning)
        one_s, one = _median_seconds(lambda: LogisticRegression(lambd=lambd, device=device).fit(X, y), device, repeats)
        probe = LogisticRegression(device=device)
        batched_s, batched = _median_seconds(
            lambda: BatchedFolds(X, y, None, splits, False, probe).scores(GRID), device, repeats)
        separate_s, separate = _median_seconds(
            lambda: SeparateFolds(X, y, None, splits, False, {"device": device}).scores(GRID), device, repeats)
        lbfgs_s, _ = _median_seconds(lambda: SeparateFolds(X, y, None, splits, False, {
            "device": device, "solver": "lbfgs"}).scores(GRID), device, max(1, repeats // 2))
    assert batched == separate, (batched, separate)  # the same scores, hence the same λ
    floor = matmul_floor(one, X, device)
    print(f"one fit: {one_s:.3f} s ({one.solver_}, {one.n_iter_} it, {one.n_matmul_} matmuls, {one.stop_reason_}), "
          f"its matmuls alone {floor:.4f} s; grid in one solve {batched_s:.3f} s, 15 separate fits {separate_s:.3f} s, "
          f"15 separate L-BFGS fits {lbfgs_s:.3f} s")
    return {"one fit / floor": one_s / floor, "grid in one solve / one fit": batched_s / one_s,
            "grid in one solve / separate fits": batched_s / separate_s,
            "grid in one solve / separate L-BFGS fits": batched_s / lbfgs_s}


def sklearn_ratio(X: np.ndarray, y: np.ndarray, lambd: float, device: str, repeats: int) -> float:
    """scikit-learn lbfgs time / ours for the same fit, scikit-learn's tol tightened until its objective is within
    1e-6 (relative) of ours."""
    from sklearn.linear_model import LogisticRegression as SkLR

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours_s, ours = _median_seconds(lambda: LogisticRegression(lambd=lambd, device=device).fit(X, y), device,
                                       repeats)
        target = objective(ours.coef_, X, y, lambd)
        for tol in (1e-4, 1e-6, 1e-8, 1e-10):
            sk_s, sk = _median_seconds(lambda: SkLR(C=1.0 / lambd, fit_intercept=False, tol=tol,
                                                    max_iter=100_000).fit(X, y), "cpu", repeats)
            if objective(sk.coef_.T, X, y, lambd) <= target * (1 + 1e-6):
                break
    return sk_s / ours_s


def objective(W: np.ndarray, X: np.ndarray, y: np.ndarray, lambd: float) -> float:
    """Float64 mean cross-entropy + (λ/N)/2 ||W||², row chunks to bound memory."""
    W = np.asarray(W, np.float64)
    n, total = len(X), 0.0
    for s in range(0, n, 4096):
        Z = np.asarray(X[s:s + 4096], np.float64) @ W
        zmax = Z.max(1, keepdims=True)
        lse = np.log(np.exp(Z - zmax).sum(1)) + zmax[:, 0]
        total += float(np.sum(lse - Z[np.arange(len(Z)), y[s:s + 4096]]))
    return total / n + 0.5 * lambd / n * float((W ** 2).sum())


def accuracy(W: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((X @ np.asarray(W, np.float32)).argmax(1) == y))


_CYANURE = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from cyanure.estimators import Classifier
    d, lambd = sys.argv[1], float(sys.argv[2])
    X = np.ascontiguousarray(np.load(d + "/X.npy"), dtype=np.float64)
    y = np.load(d + "/y.npy")
    clf = Classifier(loss="multiclass-logistic", penalty="l2", lambda_1=lambd / len(X),
                     fit_intercept=False, tol=1e-3, max_iter=300, duality_gap_interval=10,
                     verbose=False)
    t = time.perf_counter()
    clf.fit(X, y)
    elapsed = time.perf_counter() - t
    np.save(d + "/W.npy", clf.coef_)
    print(json.dumps({"time": elapsed, "epochs": float(np.max(clf.n_iter_))}))
""")


def run_cyanure(Xtr, ytr, lambd, timeout):
    with tempfile.TemporaryDirectory() as d:
        np.save(os.path.join(d, "X.npy"), Xtr.astype(np.float64))
        np.save(os.path.join(d, "y.npy"), ytr)
        try:
            proc = subprocess.run([sys.executable, "-c", _CYANURE, d, str(lambd)],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout:.0f} s"
        if proc.returncode != 0:
            return None, "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        return (np.load(os.path.join(d, "W.npy")), out), None


def main(argv=None) -> dict:
    """Returns {solver: (seconds, objective, held-out accuracy)} for the solvers that ran."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=None, help="training samples (1 %% ImageNet: 12811; --grid: 160)")
    p.add_argument("--dim", type=int, default=384, help="feature dimension (ViT-S: 384)")
    p.add_argument("--classes", type=int, default=None, help="1000; --grid: 10")
    p.add_argument("--grid", action="store_true", help="the λ grid's cross-validation in one solve (see above)")
    p.add_argument("--n-test", type=int, default=10000, help="held-out samples")
    p.add_argument("--noise", type=float, default=None,
                   help="noise / class-mean scale (default 3.5, --small: 3.0; ~60-65 %% held-out)")
    p.add_argument("--lambd", type=float, default=DEFAULT_LAMBDA, help="λ; the penalty is (λ/N)/2 ||W||²")
    p.add_argument("--tol", type=float, default=None, help="our tol (default: the estimator's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--small", action="store_true", help="2000 x 128, 100 classes, 2000 held out")
    p.add_argument("--repeats", type=int, default=1, help="fits of ours (best time reported)")
    p.add_argument("--skip-sklearn", action="store_true")
    p.add_argument("--skip-cyanure", action="store_true")
    p.add_argument("--cyanure-timeout", type=float, default=900.0, help="seconds")
    p.add_argument("--sklearn-max-iter", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("classifier_speed: --device cuda: CUDA is not available on this machine", file=sys.stderr)
        raise SystemExit(2)
    if args.grid:
        X, y = spectrum_features(args.n or 160, args.dim, args.classes or 10, seed=args.seed)
        print(f"features: {X.shape}, {args.classes or 10} classes, λ grid {GRID} x 3 folds, device {args.device}, "
              f"torch threads {torch.get_num_threads()}, median of {max(1, args.repeats)} runs")
        ratios = grid_ratios(X, y, args.lambd, args.device, max(1, args.repeats))
        if not args.skip_sklearn:
            ratios["scikit-learn / one fit, same objective"] = sklearn_ratio(X, y, args.lambd, args.device,
                                                                              max(1, args.repeats))
        for name, ratio in ratios.items():
            print(f"{name}: {ratio:.3g}")
        return ratios
    args.n, args.classes = args.n or 12811, args.classes or 1000
    if args.small:
        args.n, args.dim, args.classes, args.n_test = 2000, 128, 100, 2000
    if args.noise is None:
        args.noise = 3.0 if args.small else 3.5

    Xtr, ytr, Xte, yte = make_features(args.n, args.dim, args.classes, args.n_test, args.noise, args.seed)
    print(f"features: train {Xtr.shape}, held-out {Xte.shape}, {args.classes} classes, noise {args.noise}, "
          f"λ={args.lambd:g} (λ/N={args.lambd / args.n:.3g}), torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, device {args.device}")
    print(f"\n{'solver':34s} {'time [s]':>9s} {'objective':>12s} {'train acc':>9s} {'held-out':>9s}  notes")
    results = {}

    def report(key, name, elapsed, W, note):
        obj, tr, te = objective(W, Xtr, ytr, args.lambd), accuracy(W, Xtr, ytr), accuracy(W, Xte, yte)
        results[key] = (elapsed, obj, te)
        print(f"{name:34s} {elapsed:9.2f} {obj:12.7f} {100 * tr:8.2f}% {100 * te:8.2f}%  {note}", flush=True)

    kw = {} if args.tol is None else {"tol": args.tol}
    times, floor_ratios = [], []
    for _ in range(max(1, args.repeats)):
        clf = LogisticRegression(lambd=args.lambd, device=args.device, **kw)
        if args.device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            clf.fit(Xtr, ytr)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        floor_ratios.append(times[-1] / matmul_floor(clf, Xtr, args.device, repeats=3))  # paired: same moment
    info = clf.convergence_info()
    report("ours", f"ours (torch L-BFGS, {args.device})", min(times), clf.coef_,
           f"{info['n_iter']} it, {info['n_matmul']} matmuls, rel |g|={info['rel_grad_norm']:.1e}, "
           f"{info['stop_reason']}; all times: {', '.join(f'{x:.2f}' for x in times)}")

    if not args.skip_cyanure:
        res, err = run_cyanure(Xtr, ytr, args.lambd, args.cyanure_timeout)
        if res is None:
            print(f"{'cyanure (MSN settings)':34s} {err}", flush=True)
        else:
            W, out = res
            report("cyanure", "cyanure (MSN settings)", out["time"], W, f"{out['epochs']:.0f} epochs")

    if not args.skip_sklearn:
        from sklearn.linear_model import LogisticRegression as SkLR

        sk = SkLR(C=1.0 / args.lambd, fit_intercept=False, tol=1e-6, max_iter=args.sklearn_max_iter)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk.fit(Xtr, ytr)
        report("scikit-learn", "scikit-learn lbfgs (tol 1e-6)", time.perf_counter() - t, sk.coef_.T,
               f"{int(np.max(sk.n_iter_))} it")

    ours = results["ours"]
    spread = f" (median of {len(floor_ratios)} fits, each against its floor timed right after it: " \
        f"{min(floor_ratios):.3g}-{max(floor_ratios):.3g})" if len(floor_ratios) > 1 else ""
    print(f"one fit / floor: {float(np.median(floor_ratios)):.3g}{spread}")
    for other in ("cyanure", "scikit-learn"):
        if other in results:
            o = results[other]
            print(f"ours/{other}: time x{ours[0] / o[0]:.2f}, objective {ours[1] - o[1]:+.2e}, "
                  f"held-out acc {100 * (ours[2] - o[2]):+.2f} points")
    return results


if __name__ == "__main__":
    main()
