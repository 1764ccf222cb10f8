"""k-NN search: faiss (flat inner product) vs a plain torch matmul + top-k, same queries and references.

    python -m lowshot.benchmark.perf.knn_speed [--queries 50000 --refs 12811 --dim 768 --k 20 --device cpu|cuda --small]

Prints the time of each backend of `tasks.classifiers.KNNClassifier` and their ratio, and checks that both
return the same predictions.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from lowshot.tasks.classifiers import KNNClassifier

from .timing import seconds


def make_problem(queries: int, refs: int, dim: int, classes: int, seed: int = 0):
    """(references, their labels, queries): Gaussian class means + noise of scale 2."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(classes, dim)).astype(np.float32)
    y_ref = rng.integers(0, classes, refs)
    x_ref = means[y_ref] + rng.normal(scale=2.0, size=(refs, dim)).astype(np.float32)
    x_q = means[rng.integers(0, classes, queries)] + rng.normal(scale=2.0, size=(queries, dim)).astype(np.float32)
    return x_ref, y_ref, x_q


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=50_000)
    p.add_argument("--refs", type=int, default=12_811)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--small", action="store_true", help="CI size: 2,000 queries, 1,000 references, 128-d")
    a = p.parse_args(argv)
    if a.small:
        a.queries, a.refs, a.dim, a.classes = 2000, 1000, 128, 100
    x_ref, y_ref, x_q = make_problem(a.queries, a.refs, a.dim, a.classes)
    times, preds = {}, {}
    for backend in ("faiss", "torch"):
        knn = KNNClassifier(k=a.k, backend=backend, device=a.device).fit(x_ref, y_ref)
        times[backend] = seconds(lambda: preds.__setitem__(backend, knn.predict(x_q)), a.device, repeats=2)
    agree = float(np.mean(preds["faiss"] == preds["torch"]))
    print(f"k-NN, {a.queries} queries x {a.refs} references x {a.dim}-d, k={a.k}, {a.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"  faiss {times['faiss']:.3f}s  torch {times['torch']:.3f}s  ratio torch/faiss {times['torch'] / times['faiss']:.2f}"
          f"  predictions agree {agree:.4f}")
    return {**times, "agree": agree}


if __name__ == "__main__":
    main()
