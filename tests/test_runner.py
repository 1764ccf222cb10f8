"""benchmark/runner.py: which records a run needs, which feature each classifier reads, and what a record holds."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from benchmark.features import default_workers
from benchmark.runner import RunContext
from model_zoo import REGISTRY, load_model


@pytest.fixture(scope="module")
def msn():
    return load_model("msn-tiny")  # bundled: low-shot feature cls_prenorm, k-NN feature cls


def test_each_classifier_reads_its_own_feature_of_the_eval_config(tmp_path, msn):
    ctx = RunContext(tmp_path)
    assert [ctx.feature_for(msn, c) for c in ("logreg", "knn", "linear")] == ["cls_prenorm", "cls", "patch"]
    assert [ctx._classifier_id(msn, c) for c in ("logreg", "knn", "linear")] == ["logreg", "knn", "linear"]
    other = RunContext(tmp_path, feature="cls_prenorm")  # --feature: every classifier reads it, ids say so
    assert [other.feature_for(msn, c) for c in ("logreg", "knn")] == ["cls_prenorm", "cls_prenorm"]
    assert [other._classifier_id(msn, c) for c in ("logreg", "knn")] == ["logreg", "knn@cls_prenorm"]
    assert RunContext(tmp_path, feature="patch_last4")._classifier_id(msn, "linear") == "linear@patch_last4"


def test_needs_follows_filters_existing_records_and_overwrite(tmp_path, msn):
    ctx = RunContext(tmp_path, classifiers=("logreg",), settings=("5img",))
    assert ctx.needs(msn, "embedded-lowshot", "5img", 1, "logreg")
    assert not ctx.needs(msn, "embedded-lowshot", "5img", 1, "knn")  # not asked for
    assert not ctx.needs(msn, "embedded-lowshot", "1img", 1, "logreg")
    task = SimpleNamespace(name="embedded-lowshot", family="classification", main_score="top1")
    path = ctx.write(msn, task, "5img", 1, "logreg", {"top1": 12.5}, {"feature": "cls_prenorm"})
    assert not ctx.needs(msn, "embedded-lowshot", "5img", 1, "logreg")  # done: skipped
    assert ctx.needs(msn, "embedded-lowshot", "5img", 2, "logreg")  # another seed is another record
    assert RunContext(tmp_path, overwrite=True).needs(msn, "embedded-lowshot", "5img", 1, "logreg")
    assert RunContext(tmp_path, feature="cls").needs(msn, "embedded-lowshot", "5img", 1, "logreg")  # other id
    record = json.loads(path.read_text())
    assert (record["model"], record["method"], record["classifier"], record["main_score"]) == \
        ("msn-tiny", "msn", "logreg", "top1")
    assert record["checkpoint_sha256"] == REGISTRY["msn-tiny"].sha256 and record["architecture"]["num_heads"] == 3
    assert "torch" in record["environment"]["packages"] and record["metrics"] == {"top1": 12.5}


def test_workers_default_from_the_machine(tmp_path):
    assert RunContext(tmp_path).workers == default_workers()
    assert RunContext(tmp_path, workers=0).workers == 0
