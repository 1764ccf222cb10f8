"""Evidence files: the per-image arrays of a record (`tasks.evidence`), written beside it and verified when read.

`<record>.evidence.npz` (numpy's compressed archive) is written atomically before its record
(`evidence_beside`), and removed again when the record cannot be written (a full disk, a record that does not
validate): no evidence file without its record is left, and an earlier record's evidence at that place is put
back. The record's `evidence` field names the file, its kind, the arrays' shapes and dtypes, its size and an
xxh3-64 checksum of the file. `read_evidence(record)` checks them all and raises `EvidenceError` (one line naming
the file and what is wrong) on a missing, damaged or foreign file: a statistic is never computed from evidence
that is not the record's. The evidence is output, never input: a record's identity does not depend on it.

`score_resampled(kind, arrays, weights)` recomputes a record's main score for every row of an image weight
matrix [B, N] (bootstrap counts; all ones = the record's own score), vectorised over the rows.
"""
from __future__ import annotations

import contextlib
import os
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from lowshot.model_zoo.errors import BadInputError
from lowshot.model_zoo.files import atomic_path, temporary_prefix
from lowshot.tasks.evidence import KINDS, Evidence

from .array_store import CHECKSUM, file_checksum

SUFFIX = ".evidence.npz"


class EvidenceError(BadInputError):
    pass


def evidence_path(record_path: str | Path) -> Path:
    path = Path(record_path)
    return path.with_name(path.stem + SUFFIX)


def write_evidence(record_path: str | Path, evidence: Evidence) -> dict:
    """Write `evidence` beside the record at `record_path`; returns the record's `evidence` field."""
    path = evidence_path(record_path)
    with atomic_path(path, ".tmp.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **evidence.arrays)
        checksum, size = file_checksum(tmp), tmp.stat().st_size
    return {"file": path.name, "kind": evidence.kind, "num_images": evidence.num_images, "bytes": size,
            CHECKSUM: checksum,
            "arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in evidence.arrays.items()}}


@contextlib.contextmanager
def evidence_beside(record_path: str | Path, evidence: Evidence | None) -> Iterator[dict | None]:
    """Write `evidence` beside the record at `record_path` and yield the record's `evidence` field (None for no
    evidence: nothing is written) for the block to write the record. When the block fails, the new evidence file is
    removed and the one it replaced (an earlier record's at that path, set aside meanwhile) put back, so that no
    evidence file is left without its record; the error goes on."""
    if evidence is None:
        yield None
        return
    path = evidence_path(record_path)
    earlier = path.with_name(f"{temporary_prefix(path.name)}earlier.tmp") if path.exists() else None
    if earlier is not None:
        os.replace(path, earlier)
    try:
        yield write_evidence(record_path, evidence)
    except BaseException:
        path.unlink(missing_ok=True)
        if earlier is not None:
            os.replace(earlier, path)
        raise
    if earlier is not None:
        earlier.unlink(missing_ok=True)


def has_evidence(record: dict) -> bool:
    return isinstance(record.get("evidence"), dict)


def read_evidence(record: dict) -> Evidence:
    """The verified evidence of `record` (a record as `records.load_records` returns it, with its `path`)."""
    field = record.get("evidence")
    if not isinstance(field, dict) or "path" not in record:
        raise EvidenceError(f"{record.get('path', 'record')}: no evidence field (written before evidence was kept)")
    path = Path(record["path"]).with_name(str(field.get("file")))
    if path != evidence_path(record["path"]):
        raise EvidenceError(f"{record['path']}: its evidence field names {field.get('file')!r}, expected "
                            f"{evidence_path(record['path']).name}")
    if not path.is_file():
        raise EvidenceError(f"evidence file {path} is missing (its record {Path(record['path']).name} names it)")
    if file_checksum(path) != field.get(CHECKSUM):
        raise EvidenceError(f"evidence file {path} does not match the checksum in its record (damaged, or the "
                            "record of another run)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        evidence = Evidence(field.get("kind"), arrays)
    except (OSError, ValueError, KeyError, EOFError, NotImplementedError, zipfile.BadZipFile) as e:
        raise EvidenceError(f"evidence file {path} is unreadable ({e})") from None
    expected = {k: [v["shape"], v["dtype"]] for k, v in field.get("arrays", {}).items()}
    if {k: [list(a.shape), str(a.dtype)] for k, a in arrays.items()} != expected:
        raise EvidenceError(f"evidence file {path} holds other arrays than its record says")
    return evidence


# --------------------------------------------------------------------------- scores of resampled images


def score_resampled(evidence: Evidence, weights: np.ndarray) -> np.ndarray:
    """The main score (percent) for each row of `weights` [B, N]: image i counted weights[b, i] times."""
    weights = np.atleast_2d(np.asarray(weights, np.float64))
    a = evidence.arrays
    if evidence.kind == "single-label":
        return 100.0 * weights @ a["correct"].astype(np.float64) / weights.sum(1)
    if evidence.kind == "segmentation":
        inter, union = weights @ a["intersection"].astype(np.float64), weights @ a["union"].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / union, np.nan)
        return 100.0 * _nanmean_rows(iou)
    if evidence.kind == "multi-label":
        return 100.0 * _nanmean_rows(np.stack([_weighted_ap(a["scores"][:, c], a["target"][:, c], a["ignore"][:, c],
                                                            weights) for c in range(a["scores"].shape[1])], 1))
    raise EvidenceError(f"unknown evidence kind {evidence.kind!r} (known: {sorted(KINDS)})")


def mean_per_class_resampled(evidence: Evidence, weights: np.ndarray) -> np.ndarray:
    """Mean per-class accuracy (percent) of single-label evidence for each row of `weights` [B, N]; a class no
    resampled image has is left out of the mean."""
    weights = np.atleast_2d(np.asarray(weights, np.float64))
    classes, inverse = np.unique(evidence.arrays["target"], return_inverse=True)
    onehot = np.zeros((len(inverse), len(classes)))
    onehot[np.arange(len(inverse)), inverse] = 1.0
    per_class_n = weights @ onehot
    per_class_correct = weights @ (onehot * evidence.arrays["correct"][:, None])
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * _nanmean_rows(np.where(per_class_n > 0, per_class_correct / per_class_n, np.nan))


def resampled(evidence: Evidence, main_score: str, weights: np.ndarray) -> np.ndarray:
    """The record's `main_score` for each row of `weights`."""
    if main_score == "mean_per_class":
        return mean_per_class_resampled(evidence, weights)
    return score_resampled(evidence, weights)


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    counted = ~np.isnan(x)
    return np.where(counted.any(1), np.nansum(x, 1) / np.maximum(counted.sum(1), 1), np.nan)


def _weighted_ap(scores, target, ignore, weights) -> np.ndarray:
    """All-point AP (fraction) of one class for each row of `weights`, with tied scores forming one threshold (as
    `tasks.metrics.average_precision`); NaN where the resampled images hold no positive."""
    keep = ~ignore
    scores, target, w = scores[keep].astype(np.float64), target[keep].astype(np.float64), weights[:, keep]
    order = np.argsort(-scores, kind="mergesort")
    scores, target, w = scores[order], target[order], w[:, order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # last entry of each group of equal scores
    group_end = np.repeat(last, np.diff(np.r_[-1, last]))  # for every entry, the last entry of its group
    tp = np.cumsum(w * target, 1)
    counted = np.cumsum(w, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp[:, group_end] / counted[:, group_end]
        positives = tp[:, -1] if tp.shape[1] else np.zeros(len(w))
        return np.where(positives > 0, (w * target * np.nan_to_num(precision)).sum(1) / positives, np.nan)
