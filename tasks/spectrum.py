"""Label-free scores of a representation, from the spectrum of its embedding matrix (no labels, no fit).

- `rankme` -- RankMe (Garrido et al., ICML 2023, eq. 1): the effective rank exp(entropy) of the normalised
  singular values of the embedding matrix Z [N, D]: p_k = σ_k / ||σ||_1 + ε (ε = 1e-7), RankMe = exp(-Σ p_k log p_k).
  Between 1 (one direction) and min(N, D) (a flat spectrum); a collapsed representation scores low.
- `alpha_req` -- α-ReQ (Agrawal et al., NeurIPS 2022): the decay exponent α of the eigenspectrum of the
  features' covariance, λ_i ∝ i^(-α), fitted by least squares on log λ_i against log i over every eigenvalue
  above 1e-10 λ_1 (at most min(N - 1, D): the centred matrix has no more). Agrawal et al. find in-domain
  linear-probe accuracy best near α ≈ 1; smaller α is a flatter (whiter) spectrum, larger α a faster decay.

Both are computed in float64 from the features as cached (no per-sample preprocessing).

`LABEL_FREE_SCORES` declares them as scorers of a task's evaluation features, run by the runner beside the
classifiers: one record each, family and setting `label-free`, seed 1, classifier `rankme` or `alpha-req`
(`@<feature>` under `--feature`), main score `rankme` / `alpha_req`. Their identity is the model's configuration,
the task's evaluation set, transform, feature and the score's `definition` (with `LABEL_FREE_VERSION`), so a rerun
computes nothing and any change recomputes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

RANKME_EPS = 1e-7
ALPHA_REQ_RELATIVE_FLOOR = 1e-10


def _matrix(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or min(z.shape) < 2:
        raise ValueError(f"a label-free score needs an embedding matrix [N >= 2, D >= 2], got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("the embedding matrix contains NaN/inf")
    return z


def rankme(z, eps: float = RANKME_EPS) -> float:
    """RankMe of the embedding matrix `z` [N, D]."""
    sigma = np.linalg.svd(_matrix(z), compute_uv=False)
    p = sigma / sigma.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def covariance_spectrum(z) -> np.ndarray:
    """Eigenvalues of the covariance of the rows of `z`, largest first (squared singular values of the centred
    matrix over N - 1)."""
    z = _matrix(z)
    centred = z - z.mean(axis=0, keepdims=True)
    return np.linalg.svd(centred, compute_uv=False) ** 2 / (len(z) - 1)


def alpha_req(z) -> tuple[float, int]:
    """(α, number of eigenvalues fitted) of the embedding matrix `z` [N, D]."""
    eig = covariance_spectrum(z)
    eig = eig[eig > ALPHA_REQ_RELATIVE_FLOOR * eig[0]] if eig[0] > 0 else eig[:0]
    if len(eig) < 2:
        raise ValueError("α-ReQ needs at least two non-zero eigenvalues (the features are constant or rank 1)")
    slope = np.polyfit(np.log(np.arange(1, len(eig) + 1)), np.log(eig), 1)[0]
    return float(-slope), int(len(eig))


LABEL_FREE = "label-free"  # the family and the setting of the label-free records
LABEL_FREE_VERSION = 1  # raise it when a change of a definition changes its numbers


@dataclass(frozen=True)
class LabelFreeScore:
    name: str  # the record's classifier id
    main_score: str
    definition: dict  # recorded in the identity
    compute: Callable  # embedding matrix [N, D] -> metrics


LABEL_FREE_SCORES: tuple[LabelFreeScore, ...] = (
    LabelFreeScore("rankme", "rankme", {"eps": RANKME_EPS, "matrix": "features as cached"},
                   lambda z: {"rankme": rankme(z)}),
    LabelFreeScore("alpha-req", "alpha_req", {"relative_floor": ALPHA_REQ_RELATIVE_FLOOR,
                                              "fit": "log-log least squares",
                                              "matrix": "covariance of the features as cached"},
                   lambda z: dict(zip(("alpha_req", "eigenvalues_fitted"), alpha_req(z)))),
)
