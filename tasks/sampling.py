"""Low-shot subset sampling for multi-label classification and segmentation, and split files.

- :func:`sample_multilabel_k_per_class` -- a subset in which every class has at least ``k``
  positive images (an image counts for every class it contains).
- :func:`sample_k_per_class` -- exactly ``k`` images of every class (single-label transfer tasks).
- :func:`sample_fraction` -- a random ``fraction`` of ``n`` images (1 % / 10 % of VOC07 or
  COCO training images, 1 % / 5 % / 10 % of segmentation images).
- :func:`write_split_file` -- save the chosen image names (one per line; read back with
  ``tasks.datasets.read_name_list``) so that a run is reproducible from the saved files, independently
  of the random generator (numpy does not promise identical ``Generator`` streams across versions).
- :func:`names_to_indices` -- map saved names back to dataset indices.

Randomness comes only from ``np.random.default_rng(seed)``: the same inputs and seed give
the same subset; all indices are returned sorted as ``np.int64``.
"""

from __future__ import annotations

import warnings

import numpy as np

from lowshot.model_zoo.files import atomic_write_text

__all__ = [
    "sample_multilabel_k_per_class",
    "sample_k_per_class",
    "sample_fraction",
    "write_split_file",
    "names_to_indices",
]


def sample_multilabel_k_per_class(targets, k: int, seed: int, ignore=None, strict: bool = False) -> np.ndarray:
    """Sample images until every class has at least ``k`` positive images.

    Algorithm: visit the classes once in a seeded random order; for each class whose
    current count of chosen positives is below ``k``, add ``k - count`` random positives of
    that class not chosen yet. Each added image counts for every class it is positive for,
    so frequent classes are usually already covered when visited and the subset stays
    small (at most ``k * C`` images). Counts only grow, so after one pass every class has
    ``>= k`` positives (or all of its positives).

    Args:
        targets: ``[N, C]`` array in {0, 1}.
        k: positives wanted per class (>= 1).
        seed: random seed.
        ignore: ``[N, C]`` bool or None; ignored entries (VOC "difficult") do not count as
            positives. An image is never excluded because of them.
        strict: a class with fewer than ``k`` positives in the whole pool gets all of them
            and a ``UserWarning`` names it (default, so that e.g. rare COCO classes do not
            stop a 16-shot run); with ``strict=True`` a ``ValueError`` is raised instead.

    Returns:
        sorted ``np.int64`` indices into the ``N`` images.
    """
    targets = np.asarray(targets)
    if targets.ndim != 2:
        raise ValueError(f"sample_multilabel_k_per_class: targets must be [N, C], got shape {targets.shape}")
    if not np.all((targets == 0) | (targets == 1)):
        raise ValueError("sample_multilabel_k_per_class: targets must be 0 or 1")
    k = int(k)
    if k < 1:
        raise ValueError(f"sample_multilabel_k_per_class: k must be >= 1, got {k}")
    positives = targets == 1
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != targets.shape:
            raise ValueError(f"sample_multilabel_k_per_class: ignore shape {ignore.shape} != targets shape {targets.shape}")
        positives &= ~ignore
    n, c = positives.shape

    available = positives.sum(axis=0)
    short = np.flatnonzero(available < k)
    if short.size:
        msg = (
            f"sample_multilabel_k_per_class: {short.size} class(es) have fewer than k={k} positive images "
            f"in the pool: " + ", ".join(f"class {j} ({available[j]})" for j in short[:10])
            + (" ..." if short.size > 10 else "")
        )
        if strict:
            raise ValueError(msg)
        warnings.warn(msg + "; all their positives are taken", UserWarning, stacklevel=2)

    rng = np.random.default_rng(seed)
    chosen = np.zeros(n, dtype=bool)
    counts = np.zeros(c, dtype=np.int64)
    for j in rng.permutation(c):
        need = k - counts[j]
        if need <= 0:
            continue
        candidates = np.flatnonzero(positives[:, j] & ~chosen)
        if candidates.size == 0:
            continue
        pick = rng.permutation(candidates)[:need]
        chosen[pick] = True
        counts += positives[pick].sum(axis=0)
    return np.flatnonzero(chosen).astype(np.int64)


def sample_k_per_class(targets, k: int, seed: int) -> np.ndarray:
    """Exactly ``k`` images of every class of ``targets`` ([N] integer labels): for each class in label order,
    the first ``k`` of a seeded permutation of its images. A class with fewer than ``k`` images is a
    ``ValueError`` naming it (a k-shot setting would not be k-shot)."""
    targets = np.asarray(targets)
    k = int(k)
    if targets.ndim != 1 or k < 1:
        raise ValueError(f"sample_k_per_class: need [N] labels and k >= 1, got shape {targets.shape}, k={k}")
    classes, counts = np.unique(targets, return_counts=True)
    short = classes[counts < k]
    if short.size:
        raise ValueError(f"sample_k_per_class: {short.size} class(es) have fewer than k={k} images, e.g. class "
                         f"{short[0]} ({counts[counts < k][0]})")
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(targets == c))[:k] for c in classes]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def sample_fraction(n: int, fraction: float, seed: int) -> np.ndarray:
    """A random ``fraction`` of ``range(n)``, sorted ``np.int64``.

    The size is ``max(1, floor(fraction * n + 0.5))`` (round half up, at least one image).
    The subset is a prefix of one seeded permutation of ``range(n)``, so for a fixed seed
    smaller fractions are nested in larger ones (1 % subset of 5 % subset of 10 %).
    """
    n = int(n)
    fraction = float(fraction)
    if n < 1:
        raise ValueError(f"sample_fraction: n must be >= 1, got {n}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"sample_fraction: fraction must be in (0, 1], got {fraction}")
    size = max(1, min(n, int(np.floor(fraction * n + 0.5))))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:size]).astype(np.int64)


def write_split_file(path, names) -> None:
    """Write ``names`` one per line to ``path`` atomically (a crash leaves no half-written split).

    Parent folders are created. Names must be non-empty strings without surrounding
    whitespace or line breaks, and unique, so that ``tasks.datasets.read_name_list`` reads back
    exactly the same list.
    """
    names = list(names)
    if not names:
        raise ValueError(f"write_split_file: refusing to write an empty split to {path}")
    for name in names:
        if not isinstance(name, str) or not name or name != name.strip() or "\n" in name or "\r" in name:
            raise ValueError(f"write_split_file: invalid image name {name!r} for {path}")
    if len(set(names)) != len(names):
        raise ValueError(f"write_split_file: duplicated names in the split for {path}")
    atomic_write_text(path, "\n".join(names) + "\n")


def names_to_indices(all_names, subset) -> np.ndarray:
    """Sorted ``np.int64`` indices of ``subset`` names in ``all_names`` (e.g. ``dataset.names``).

    Raises ``KeyError`` listing names that are not in ``all_names`` (a split file written for
    another dataset or split).
    """
    index = {name: i for i, name in enumerate(all_names)}
    missing = [s for s in subset if s not in index]
    if missing:
        raise KeyError(f"{len(missing)} name(s) are not in the dataset, e.g. {missing[:3]}")
    return np.sort(np.array([index[s] for s in subset], dtype=np.int64))
