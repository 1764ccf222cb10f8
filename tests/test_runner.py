"""benchmark/runner.py: which records a run wants, which feature each classifier reads, record paths and identity,
and what a record holds."""
from __future__ import annotations

import errno
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from lowshot import evaluate
from lowshot.benchmark import records
from lowshot.benchmark.evidence import evidence_beside, evidence_path, read_evidence
from lowshot.benchmark.features import default_workers, model_identity
from lowshot.benchmark.records import record_path, write_record
from lowshot.benchmark.runner import RunContext
from lowshot.model_zoo import REGISTRY, load_model
from lowshot.model_zoo.errors import NonFiniteError, WriteError
from lowshot.model_zoo.files import atomic_write
from lowshot.tasks.evidence import single_label_evidence


@pytest.fixture(scope="module")
def msn():
    return load_model("msn-tiny")  # bundled: low-shot feature cls_prenorm, k-NN feature cls


TASK = SimpleNamespace(name="embedded-lowshot", family="classification", main_score="top1")
WHAT = (TASK.name, TASK.family, TASK.main_score)


def test_each_classifier_reads_its_own_feature_of_the_eval_config(tmp_path, msn):
    ctx = RunContext(tmp_path)
    assert [ctx.feature_for(msn, c) for c in ("logreg", "knn", "linear")] == ["cls_prenorm", "cls", "patch"]
    assert [ctx.classifier_id(msn, c) for c in ("logreg", "knn", "linear")] == ["logreg", "knn", "linear"]
    other = RunContext(tmp_path, feature="cls_prenorm")  # --feature: every classifier reads it, ids say so
    assert [other.feature_for(msn, c) for c in ("logreg", "knn")] == ["cls_prenorm", "cls_prenorm"]
    assert [other.classifier_id(msn, c) for c in ("logreg", "knn")] == ["logreg", "knn@cls_prenorm"]
    assert RunContext(tmp_path, feature="patch_last4").classifier_id(msn, "linear") == "linear@patch_last4"
    cv = RunContext(tmp_path, lambd="cv")  # the user's λ rule shows in the id of the classifiers it changes
    assert [cv.classifier_id(msn, c) for c in ("logreg", "knn")] == ["logreg λ=cv", "knn"]


def test_filters_record_paths_and_identity(tmp_path, msn):
    ctx = RunContext(tmp_path, classifiers=("logreg",), settings=("5img",))
    assert ctx.wanted("5img", "logreg") and not ctx.wanted("5img", "knn") and not ctx.wanted("1img", "logreg")
    path = record_path(tmp_path, msn.info.name, TASK.name, "5img", 1, "logreg", "0123456789abcdef")
    assert path == tmp_path / "msn-tiny" / "embedded-lowshot" / "5img-seed1__logreg__01234567.json"
    assert not ctx.is_done(path, "id-1")
    ctx.write(path, msn, *WHAT, "5img", 1, "logreg", {"top1": 12.5}, {"identity": "id-1", "feature": "cls_prenorm"})
    assert ctx.is_done(path, "id-1")
    assert not ctx.is_done(path, "id-2")  # same configuration, other data (e.g. images replaced): computed again
    assert not RunContext(tmp_path, overwrite=True).is_done(path, "id-1")
    path.write_text("{garbled")
    assert not ctx.is_done(path, "id-1")  # an unreadable record is computed again, never trusted
    record_file = ctx.write(path, msn, *WHAT, "5img", 1, "logreg", {"top1": 12.5}, {"identity": "id-1"})
    record = json.loads(record_file.read_text())
    assert (record["model"], record["method"], record["classifier"], record["main_score"]) == \
        ("msn-tiny", "msn", "logreg", "top1")
    assert record["checkpoint_sha256"] == REGISTRY["msn-tiny"].sha256 and record["architecture"]["num_heads"] == 3
    assert "torch" in record["environment"]["packages"] and record["metrics"] == {"top1": 12.5}


def test_a_non_finite_metric_is_never_written(tmp_path, msn):
    ctx = RunContext(tmp_path)
    path = record_path(tmp_path, msn.info.name, TASK.name, "5img", 1, "logreg", "0123456789abcdef")
    with pytest.raises(NonFiniteError, match="msn-tiny embedded-lowshot 5img seed 1 logreg.*inf"):
        ctx.write(path, msn, *WHAT, "5img", 1, "logreg", {"top1": float("inf")}, {})
    assert not path.exists()


def test_model_config_holds_what_decides_the_features(msn):
    config = model_identity(msn)
    assert config["checkpoint_sha256"] == REGISTRY["msn-tiny"].sha256 and config["method"] == "msn"
    assert config["architecture"]["num_heads"] == 3 and config["eval_config"]["lowshot_feature"] == "cls_prenorm"


def test_workers_default_from_the_machine(tmp_path):
    assert RunContext(tmp_path).workers == default_workers()
    assert RunContext(tmp_path, workers=0).workers == 0


def _full_disk(path, text, what=""):
    """records' atomic_write_text on a full disk: the temporary file cannot be written."""
    def write(tmp):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return atomic_write(path, write, what=what)


def test_a_record_that_cannot_be_written_leaves_no_evidence_file(tmp_path, monkeypatch):
    results = tmp_path / "r"
    monkeypatch.setattr(records, "atomic_write_text", _full_disk)
    with pytest.raises(WriteError, match="cannot write the result record to .*json: No space left on device"):
        evaluate("dino-tiny", "embedded-lowshot", settings="1img", classifiers="knn", results=results,
                 cache=tmp_path / "c")
    left = sorted(p.name for p in results.rglob("*") if p.is_file() and p.parent.name != ".locks")
    assert left == [], left  # neither the record, nor its evidence, nor a temporary file (only the run's lock)
    monkeypatch.undo()
    evaluate("dino-tiny", "embedded-lowshot", settings="1img", classifiers="knn", results=results,
             cache=tmp_path / "c")
    written = sorted(results.rglob("*.json"))
    assert len(written) == 3 and sorted(results.rglob("*.evidence.npz")) == sorted(
        evidence_path(p) for p in written)  # a working disk: each record with its evidence


def test_a_failed_record_puts_back_the_evidence_of_the_record_it_would_replace(tmp_path):
    target = np.arange(6) % 3
    path = record_path(tmp_path, "m", "embedded-lowshot", "1img", 1, "knn", "0123456789abcdef")
    with evidence_beside(path, single_label_evidence(target, target)) as field:  # an earlier record, all correct
        write_record(path, {"model": "m", "task": "embedded-lowshot", "setting": "1img", "seed": 1,
                            "classifier": "knn", "main_score": "top1", "metrics": {"top1": 100.0}, "evidence": field})
    earlier = {**json.loads(path.read_text()), "path": str(path)}
    with pytest.raises(NonFiniteError):  # its rerun (another subset: all wrong) fails the record's validation
        with evidence_beside(path, single_label_evidence((target + 1) % 3, target)):
            raise NonFiniteError("top1 is nan")
    assert read_evidence(earlier).arrays["correct"].all()  # the earlier record reads its own evidence again
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, evidence_path(path).name])
