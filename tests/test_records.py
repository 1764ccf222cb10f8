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
