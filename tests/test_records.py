"""benchmark/records.py: record paths, atomic writes with the required fields, reading back, malformed files."""
from __future__ import annotations

import json
import os
import stat

import pytest

from lowshot.benchmark.records import MalformedRecord, load_records, read_record, record_path, write_record

RECORD = {"model": "dino-vits16", "task": "imagenet-lowshot", "setting": "5img", "seed": 2, "classifier": "logreg",
          "main_score": "top1", "metrics": {"top1": 58.25}}


def test_path_layout_and_unsafe_characters(tmp_path):
    assert record_path(tmp_path, "dino-vits16", "imagenet-lowshot", "5img", 2, "logreg") == \
        tmp_path / "dino-vits16" / "imagenet-lowshot" / "5img-seed2__logreg.json"
    path = record_path(tmp_path, "my model/v2", "embedded-lowshot", "1img", 1, "knn@cls_last4")
    assert path.parent.parent == tmp_path / "my_model_v2" and path.name == "1img-seed1__knn_cls_last4.json"


def test_write_then_read_round_trip(tmp_path):
    path = write_record(record_path(tmp_path, "dino-vits16", "imagenet-lowshot", "5img", 2, "logreg"), RECORD)
    assert read_record(path) == {"schema": 1, **RECORD}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # written through a temporary file, renamed
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # readable by others, like any file (not 0600)
    records, problems = load_records(tmp_path)
    assert problems == [] and records == [{"schema": 1, **RECORD, "path": str(path)}]


def test_a_record_without_its_required_fields_is_never_written(tmp_path):
    path = tmp_path / "r.json"
    incomplete = {k: v for k, v in RECORD.items() if k != "main_score"}
    with pytest.raises(ValueError, match="main_score"):
        write_record(path, incomplete)
    assert not path.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("text,why", [
    ('{"model": "x", "metrics": ', "not a readable JSON record"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({k: v for k, v in RECORD.items() if k != "seed"}), r"missing field\(s\) \['seed'\]"),
    (json.dumps({**RECORD, "metrics": {"top1": "high"}}), "main score 'top1' is missing or not a number"),
    (json.dumps({**RECORD, "metrics": {"map": 3.0}}), "main score 'top1' is missing"),
])
def test_malformed_records_are_named_and_skipped(tmp_path, text, why):
    bad = tmp_path / "m" / "t" / "bad.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(text)
    with pytest.raises(MalformedRecord, match=why):
        read_record(bad)
    good = write_record(tmp_path / "m" / "t" / "good.json", RECORD)
    records, problems = load_records(tmp_path)
    assert [r["path"] for r in records] == [str(good)]
    assert len(problems) == 1 and str(bad) in problems[0]


@pytest.mark.parametrize("field, value", [
    ("seed", "one"), ("seed", True), ("seed", 1.5), ("num_train", "many"), ("num_train", -3),
    ("num_classes", 10.5), ("chance", {"value": "high"}), ("chance", 50), ("convergence", {"converged": "yes"}),
    ("convergence", "yes"), ("metrics", {"top1": 58.25, "top5": "most"}), ("model", 3), ("model", ""),
    ("setting", ["5img"]), ("method", {"dino": 1}), ("config_digest", 12), ("config", [1]),
    ("finished", 20260101), ("per_class_acc", "all good"), ("main_score", ["top1"]),
])
def test_records_are_validated_field_by_field(tmp_path, field, value):
    """A record with a field of the wrong type is named and skipped; the leaderboard and the report still run, and
    the value never reaches a table."""
    from lowshot.benchmark.cli import main

    results = tmp_path / "runs"
    good = write_record(record_path(results, "dino-vits16", "imagenet-lowshot", "5img", 2, "logreg"),
                        {**RECORD, "family": "classification", "chance": {"value": 0.1},
                         "convergence": {"converged": True}, "num_train": 5000})
    bad = good.with_name("5img-seed3__logreg.json")
    bad.write_text(json.dumps({**RECORD, "family": "classification", "seed": 3, "metrics": {"top1": 99.0},
                               field: value}))
    with pytest.raises(MalformedRecord, match=f"{bad}: (field '{field}' is|main score)"):
        read_record(bad)
    for verb in (["leaderboard", str(results), "--out", str(tmp_path / "out")],
                 ["report", str(results), "--out", str(tmp_path / "report.html")]):
        code, err = _run(main, verb)
        assert code == 0 and [line for line in err.splitlines() if "malformed" in line] == \
            [line for line in err.splitlines() if str(bad) in line] and str(bad) in err
    table = (tmp_path / "out" / "records.csv").read_text()
    assert "99.0" not in table and len(table.splitlines()) == 2  # the header and the good record


def _run(main, argv):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def test_a_record_without_a_family_is_tabulated_under_its_tasks_family(tmp_path):
    from lowshot.benchmark.cli import main

    write_record(record_path(tmp_path / "runs", "dino-vits16", "imagenet-lowshot", "5img", 2, "logreg"), RECORD)
    code, err = _run(main, ["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert code == 0 and "| dino-vits16 | – | ours | – | – | 58.2 (n=1) | – |" in (tmp_path / "out" / "leaderboard.md").read_text()
