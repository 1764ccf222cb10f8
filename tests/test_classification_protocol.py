"""The low-shot classification protocol end to end: a small ImageFolder the test writes, the official split
files, the embedded dataset with a fixture checkpoint, the feature cache, records and bad input."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from lowshot.benchmark.cli import main
from lowshot.benchmark.records import load_records
from lowshot.model_zoo.download import ChecksumError
from lowshot.model_zoo.files import sha256_file
from lowshot.tasks.classification import LowShotClassification, imagenet_data
from lowshot.tasks.datasets.imagenet import IMAGENET_SPLITS, SplitError, class_of, read_split

from .conftest import IMAGEFOLDER_CLASSES as CLASSES
from .conftest import SPLITS, fixture_model_args, require, write_imagefolder, write_imagenet_splits

SETTINGS = LowShotClassification.settings


@pytest.fixture
def imagefolder(tmp_path):
    data, splits = tmp_path / "imagenet", tmp_path / "splits"
    write_imagefolder(data)
    write_imagenet_splits(splits)
    return data, splits


def test_official_split_files_verify_and_parse():
    require(SPLITS)
    for split in IMAGENET_SPLITS.values():
        path = SPLITS / split.relpath
        assert sha256_file(path) == split.sha256, split.relpath
        names = [ln for ln in path.read_text().split() if ln]
        classes = sorted({class_of(n) for n in names})
        assert len(classes) == 1000
        parsed = read_split(path, classes, split.images_per_class)
        assert len(parsed) == (split.images_per_class or 12.811) * 1000
    # nested within a seed: 1 ⊂ 2 ⊂ 5 (seed 3's 5-image file is the misnamed 3imgs_class.txt)
    one, two, five = (set(read_split(SPLITS / IMAGENET_SPLITS[f"{k}img-seed3"].relpath, classes))
                      for k in (1, 2, 5))
    assert one < two < five


def test_imagenet_protocol_end_to_end_with_cache(imagefolder, tmp_path, capsys):
    data, splits = imagefolder
    results, cache = tmp_path / "results", tmp_path / "features"
    args = ["bench", *fixture_model_args(), "--task", "imagenet-lowshot", "--data-root", str(data),
            "--splits", str(splits), "--custom-splits", "--results", str(results), "--cache", str(cache),
            "--workers", "0", "--quiet"]
    assert main(args) == 0
    records, problems = load_records(results)
    assert not problems
    assert sorted(r["classifier"] for r in records if r["family"] == "label-free") == ["alpha-req", "rankme"]
    records = [r for r in records if r["family"] != "label-free"]
    assert len(records) == 20  # 10 settings x (logreg, knn)
    by_key = {(r["setting"], r["seed"], r["classifier"]): r for r in records}
    assert {(s, seed) for s, seed, _ in by_key} == {("1img", 1), ("2img", 1), ("5img", 1), ("1img", 2), ("2img", 2),
                                                     ("5img", 2), ("1img", 3), ("2img", 3), ("5img", 3), ("1percent", 1)}
    r = by_key[("5img", 3, "logreg")]
    assert r["num_train"] == 15 and r["num_test"] == 12 and r["feature"] == "cls"
    assert r["hyperparameters"]["lambd"] == 0.0025 and r["checkpoint_sha256"]
    assert "custom" in r["split_source"] and r["convergence"]["n_iter"] >= 1
    assert by_key[("1percent", 1, "logreg")]["hyperparameters"]["lambd"] == 0.075
    # the images' colour follows the class (3 classes, chance 33.3 %): any probe on 5 images per class separates them
    assert all(x["metrics"]["top1"] >= 90 for x in records if x["setting"] in ("5img", "1percent")), {
        k: x["metrics"]["top1"] for k, x in by_key.items()}
    mtimes = _stamps(results)
    cached = _stamps(cache, "*.npy")
    assert len(cached) == 2 and len(mtimes) == 22  # train union + val, one feature each; 20 + 2 label-free records
    out = capsys.readouterr().out
    assert "22 record(s) written" in out  # and the two label-free scores of the validation features
    # Second run: nothing computed, no record rewritten.
    assert main(args) == 0
    assert _stamps(results) == mtimes and _stamps(cache, "*.npy") == cached
    out = capsys.readouterr().out
    assert "0 record(s) written" in out and "0 computed" in out
    # --overwrite recomputes the records (features still come from the cache) and gives the same numbers.
    before = {(x["setting"], x["seed"], x["classifier"]): x["metrics"]["top1"] for x in records}
    assert main(args + ["--overwrite"]) == 0
    again = [r for r in load_records(results)[0] if r["family"] != "label-free"]
    assert {(x["setting"], x["seed"], x["classifier"]): x["metrics"]["top1"] for x in again} == before
    rewritten = _stamps(results)
    assert set(rewritten) == set(mtimes) and all(rewritten[p] != mtimes[p] for p in mtimes)  # every record again
    assert _stamps(cache, "*.npy") == cached  # from the cache
    assert "0 computed" in capsys.readouterr().out


def _stamps(directory, pattern="*.json") -> dict:
    """{file: modification time} under `directory`: a run that computes nothing leaves it as it was."""
    return {p: p.stat().st_mtime_ns for p in directory.rglob(pattern)}


def test_split_sha256_mismatch_and_bad_splits(imagefolder, tmp_path):
    data, splits = imagefolder
    with pytest.raises(ChecksumError, match="1imgs_class.txt"):
        imagenet_data(data, SETTINGS, splits)  # not the official files and not declared custom
    # unknown wnid
    bad = splits / "imagenet_subsets2" / "2imgs_class.txt"
    bad.write_text(bad.read_text() + "n09999999_1.JPEG\n")
    with pytest.raises(SplitError, match="not in the dataset"):
        imagenet_data(data, SETTINGS, splits, custom_splits=True)
    write_imagenet_splits(splits)
    # image listed but missing on disk: named, before any feature is computed
    name = read_split(splits / "imagenet_subsets1/1imgs_class.txt", CLASSES)[1]
    (data / "train" / class_of(name) / name).unlink()
    with pytest.raises(SplitError, match="missing"):
        imagenet_data(data, SETTINGS, splits, custom_splits=True)


def test_empty_class_is_an_error(imagefolder):
    data, splits = imagefolder
    shutil.rmtree(data / "val" / CLASSES[2])
    (data / "val" / CLASSES[2]).mkdir()
    with pytest.raises(SplitError, match="empty"):
        imagenet_data(data, SETTINGS, splits, custom_splits=True)


@pytest.mark.slow
def test_embedded_protocol_with_fixture_checkpoint(tmp_path, capsys):
    results = tmp_path / "results"
    args = ["bench", *fixture_model_args(), "--task", "embedded-lowshot", "--results", str(results),
            "--cache", str(tmp_path / "features"), "--workers", "0", "--quiet"]
    assert main(args) == 0
    records = [r for r in load_records(results)[0] if r["family"] != "label-free"]  # + RankMe and α-ReQ
    assert len(records) == 20
    logreg = [r for r in records if r["classifier"] == "logreg"]
    chance = 100 / logreg[0]["num_classes"]
    five = np.mean([r["metrics"]["top1"] for r in logreg if r["setting"] == "5img"])
    one = np.mean([r["metrics"]["top1"] for r in logreg if r["setting"] == "1img"])
    assert five > chance  # even a random-weight tiny ViT carries some signal
    assert five >= one - 1.0  # more labels do not hurt (small tolerance for noise)
    # the leaderboard written after the run holds this run's means
    board = pd.read_csv(results / "leaderboard.csv")
    (row,) = board[board["source"] == "ours"].to_dict("records")
    assert row["model"] == logreg[0]["model"]
    for setting in ("1img", "5img", "1percent"):
        for classifier in ("logreg", "knn"):
            scores = [r["metrics"]["top1"] for r in records if (r["setting"], r["classifier"]) == (setting, classifier)]
            assert row[f"embedded-lowshot {setting} {classifier} mean"] == pytest.approx(np.mean(scores), abs=5e-4)
    assert "embedded-lowshot" in capsys.readouterr().out
