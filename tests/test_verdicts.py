"""benchmark/verdicts.py: the best cell of a column, the cells tied with it, ranks and mean ranks, in the summary,
leaderboard.md and the report's cell text."""
from __future__ import annotations

import json

import numpy as np

from lowshot.benchmark.leaderboard import load_all, write_tables
from lowshot.benchmark.verdicts import mean_ranks, verdict_lines

from .test_statistics import _write


def _three_models(tmp_path):
    """strong and its twin (the same predictions under another name), and weak, far below them."""
    rng = np.random.default_rng(11)
    target = rng.integers(0, 10, 400)
    for seed in (1, 2, 3):
        u = rng.random(400)
        _write(tmp_path, "strong", seed, u < 0.6 + 0.02 * seed, target)
        _write(tmp_path, "twin", seed, u < 0.6 + 0.02 * seed, target)
        _write(tmp_path, "weak", seed, u < 0.3, target)
    return load_all(tmp_path, reference=None)


def test_best_tied_and_ranks(tmp_path):
    _, _, summary = _three_models(tmp_path)
    row = summary.set_index("model")
    assert {row.loc["strong", "mark"], row.loc["twin", "mark"]} == {"best", "tied"}
    assert row.loc["weak", "mark"] != "tied" and row.loc["weak", "p_holm_vs_best"] < 0.05
    assert row.loc["weak", "vs_best"] < 0 and row.loc["weak", "vs_best_high"] < 0
    assert row["rank"].to_dict() == {"strong": 1, "twin": 1, "weak": 3}
    assert (row["ci_low"] < row["mean"]).all() and (row["mean"] < row["ci_high"]).all()
    assert set(row["ci_method"]) == {"seed t + image bootstrap"}
    ranks = mean_ranks(summary).set_index("model")
    assert ranks["mean_rank"].to_dict() == {"strong": 1.0, "twin": 1.0, "weak": 3.0}
    weak = {k: v for k, v in row.loc["weak"].items() if k in ("vs_best", "vs_best_low", "vs_best_high", "p_vs_best",
                                                              "p_holm_vs_best", "mark", "best_model", "test")}
    assert "significantly lower" in " ".join(verdict_lines(weak))


def test_leaderboard_marks_the_best_and_its_ties_and_lists_mean_ranks(tmp_path):
    _, frame, summary = _three_models(tmp_path)
    text = write_tables(frame, summary, tmp_path)["markdown"].read_text()
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if "(n=" in line}
    assert lines["strong"].count("▲") + lines["twin"].count("▲") == 1
    assert lines["strong"].count("≈") + lines["twin"].count("≈") == 1
    assert "▲" not in lines["weak"] and "≈" not in lines["weak"]
    assert "## Mean rank" in text and "| weak | 3.00 | 1 |" in text


def test_without_evidence_the_interval_is_the_t_interval_over_seeds(tmp_path):
    _three_models(tmp_path)
    for path in tmp_path.rglob("*.json"):
        record = json.loads(path.read_text())
        record.pop("evidence")
        path.write_text(json.dumps(record))
    _, _, summary = load_all(tmp_path, reference=None)
    assert set(summary["ci_method"]) == {"t over seeds"}


def test_a_comparison_without_an_interval_still_shows_in_the_report():
    """A cell compared with its column's best whose difference has no interval (one seed, no per-image evidence:
    the fields are missing from the verdict) is shown with "–", never a KeyError (the committed embedded report)."""
    from lowshot.benchmark.verdicts import verdict_lines

    lines = verdict_lines({"mark": None, "vs_best": -1.25, "best_model": "msn-tiny", "p_vs_best": float("nan")})
    assert lines == ["against the column's best, msn-tiny: difference -1.25, 95 % interval [–, –], p = –, "
                     "Holm-corrected over the table p = –: no p-value (–)"]
