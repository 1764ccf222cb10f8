"""`lowshot compare RESULTS A B`: the table and the CSV, one-line errors; A/A (the same weights under two names)
and a pretrained tiny model against random-tiny on full multi-label, end to end (slow)."""
from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from lowshot.benchmark.cli import main as lowshot
from lowshot.benchmark.statistics import COMPARISON_COLUMNS
import lowshot.model_zoo as lowshot_model_zoo
from lowshot.model_zoo import REGISTRY

from .test_statistics import _results

WEIGHTS = REGISTRY["dino-tiny"]


def _csv(capsys, *args) -> list[dict]:
    assert lowshot(["compare", *map(str, args), "--csv"]) == 0
    text = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == COMPARISON_COLUMNS
    return rows


def test_compare_prints_one_row_per_cell_and_names_the_test(tmp_path, capsys):
    _results(tmp_path, np.random.default_rng(3))
    (row,) = _csv(capsys, tmp_path, "a", "b")
    assert (row["task"], row["setting"], row["classifier"]) == ("embedded-lowshot", "1img", "logreg")
    assert float(row["ci_low"]) < float(row["difference"]) < float(row["ci_high"])
    assert float(row["difference"]) == pytest.approx(float(row["mean_a"]) - float(row["mean_b"]))
    assert row["significant"] == str(float(row["p_holm"]) < 0.05)
    assert lowshot(["compare", str(tmp_path), "a", "b", "--task", "embedded-lowshot"]) == 0
    text = capsys.readouterr().out
    assert "paired t over seeds + paired image bootstrap" in text and "Holm" in text


@pytest.mark.parametrize("args, message", [(["a", "zzz"], "model 'zzz' has no record"),
                                           (["a", "b", "--task", "nope"], "task 'nope' has no record")])
def test_compare_bad_names_are_one_line_errors(tmp_path, capsys, args, message):
    _results(tmp_path, np.random.default_rng(3))
    assert lowshot(["compare", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _bench(results, *args):
    assert lowshot(["bench", *map(str, args), "--results", str(results), "--quiet"]) == 0


@pytest.mark.slow
def test_the_same_weights_under_two_names_differ_nowhere(tmp_path, capsys):
    for name in ("twin-a", "twin-b"):
        shutil.copy(Path(lowshot_model_zoo.__file__).parent / WEIGHTS.bundled, tmp_path / f"{name}.safetensors")
        _bench(tmp_path / "results", "--model", tmp_path / f"{name}.safetensors", "--method", "dino",
               "--num-heads", WEIGHTS.num_heads, "--task", "embedded-lowshot", "--setting", "1img")
    capsys.readouterr()
    rows = _csv(capsys, tmp_path / "results", "twin-a.safetensors", "twin-b.safetensors")  # named by their files
    assert {r["classifier"] for r in rows} == {"logreg", "knn"}
    assert all(float(r["difference"]) == 0 and r["significant"] == "False" for r in rows)


@pytest.mark.slow
def test_a_pretrained_tiny_model_beats_random_on_full_multilabel(tmp_path, capsys):
    _bench(tmp_path, "--model", "dino-tiny", "--model", "random-tiny", "--task", "embedded-multilabel",
           "--setting", "full", "--classifier", "logreg")
    capsys.readouterr()
    (row,) = _csv(capsys, tmp_path, "dino-tiny", "random-tiny")
    assert row["setting"] == "full" and row["significant"] == "True" and float(row["ci_low"]) > 0
