"""Tests for tasks/sampling.py: k-per-class multi-label sampling, fractions, split files (written here, read by
tasks.datasets.read_name_list)."""

import os
import warnings

import numpy as np
import pytest

from lowshot.tasks.datasets import read_name_list
from lowshot.tasks.sampling import (
    names_to_indices,
    sample_fraction,
    sample_multilabel_k_per_class,
    write_split_file,
)


def _random_targets(n=400, c=12, seed=0):
    rng = np.random.default_rng(seed)
    freq = np.linspace(0.06, 0.4, c)  # rare and frequent classes
    t = (rng.random((n, c)) < freq).astype(np.float32)
    return t


@pytest.mark.parametrize("k", [1, 2, 5, 16])
def test_every_class_reaches_k(k):
    t = _random_targets()
    idx = sample_multilabel_k_per_class(t, k, seed=3)
    assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    assert np.all(t[idx].sum(axis=0) >= k)
    assert len(idx) <= k * t.shape[1]


def test_seeds_reproducible_and_different():
    t = _random_targets()
    a = sample_multilabel_k_per_class(t, 4, seed=7)
    b = sample_multilabel_k_per_class(t, 4, seed=7)
    c = sample_multilabel_k_per_class(t, 4, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_ignored_entries_do_not_count():
    t = np.zeros((6, 2), dtype=np.float32)
    t[:, 0] = 1
    t[[0, 1, 2], 1] = 1
    ignore = np.zeros_like(t, dtype=bool)
    ignore[[0, 1], 1] = True  # difficult: only image 2 is a real positive of class 1
    with pytest.warns(UserWarning, match="class 1 \\(1\\)"):
        idx = sample_multilabel_k_per_class(t, 2, seed=0, ignore=ignore)
    assert 2 in idx
    positives = (t == 1) & ~ignore
    assert positives[idx, 0].sum() >= 2 and positives[idx, 1].sum() == 1


def test_short_classes_warn_or_raise():
    t = np.zeros((10, 3), dtype=np.float32)
    t[:, 0] = 1
    t[:2, 1] = 1  # only 2 positives, class 2 has none
    with pytest.warns(UserWarning, match="fewer than k=3"):
        idx = sample_multilabel_k_per_class(t, 3, seed=1)
    assert {0, 1} <= set(idx.tolist()) and t[idx, 0].sum() >= 3
    with pytest.raises(ValueError, match="class 1 \\(2\\), class 2 \\(0\\)"):
        sample_multilabel_k_per_class(t, 3, seed=1, strict=True)
    with pytest.raises(ValueError, match="k must be"):
        sample_multilabel_k_per_class(t, 0, seed=1)


def test_no_warning_when_all_classes_have_enough():
    t = _random_targets()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample_multilabel_k_per_class(t, 2, seed=0)


@pytest.mark.parametrize(
    "n,fraction,size",
    [(1464, 0.01, 15), (1464, 0.05, 73), (1464, 0.1, 146), (5011, 0.01, 50), (20, 0.01, 1), (7, 1.0, 7)],
)
def test_fraction_sizes(n, fraction, size):
    idx = sample_fraction(n, fraction, seed=0)
    assert len(idx) == size and idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < n


def test_fraction_reproducible_nested_and_validated():
    a = sample_fraction(1000, 0.1, seed=5)
    np.testing.assert_array_equal(a, sample_fraction(1000, 0.1, seed=5))
    assert not np.array_equal(a, sample_fraction(1000, 0.1, seed=6))
    small = sample_fraction(1000, 0.01, seed=5)
    assert set(small.tolist()) <= set(a.tolist())
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            sample_fraction(10, bad, seed=0)


def test_split_file_round_trip(tmp_path):
    names = ["2008_000123", "COCO_train2014_000000000009", "ADE_train_00000001"]
    path = tmp_path / "splits" / "voc07_k4_seed0.txt"
    write_split_file(path, names)
    assert read_name_list(path) == names
    # overwrite atomically; no temporary file left behind
    write_split_file(path, names[:1])
    assert read_name_list(path) == names[:1]
    assert os.listdir(path.parent) == ["voc07_k4_seed0.txt"]
    all_names = ["x", *names]
    np.testing.assert_array_equal(names_to_indices(all_names, read_name_list(path)), [1])
    with pytest.raises(KeyError, match="not in the dataset"):
        names_to_indices(["x"], names)


def test_split_file_errors(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_name_list(missing)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt.*empty"):
        read_name_list(empty)
    twice = tmp_path / "twice.txt"
    twice.write_text("a\nb\na\n")
    with pytest.raises(ValueError, match=r"twice.txt.*more than once.*'a'"):
        read_name_list(twice)
    with pytest.raises(ValueError, match="empty split"):
        write_split_file(tmp_path / "w.txt", [])
    with pytest.raises(ValueError, match="invalid image name"):
        write_split_file(tmp_path / "w.txt", ["a\nb"])
    with pytest.raises(ValueError, match="duplicated"):
        write_split_file(tmp_path / "w.txt", ["a", "a"])
    assert not (tmp_path / "w.txt").exists()
