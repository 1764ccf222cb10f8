"""Sharded feature extraction under torchrun: two CPU processes (gloo) extract the embedded classification task's
features into one cache, then a plain `lowshot bench` fits from that cache without computing any feature; a rank
that fails makes every rank fail clearly and leaves no file behind."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lowshot.benchmark.cli import main
from lowshot.benchmark.features import FeatureCache
from lowshot.benchmark.records import load_records
from lowshot.model_zoo import load_model

from .conftest import ROOT

# 1img x 3 seeds x logreg: 3 records; the features are those of the whole task (union of all splits + test set).
BENCH = ["bench", "--model", "dino-tiny", "--task", "embedded-lowshot", "--setting", "1img", "--classifier", "logreg",
         "--workers", "0", "--batch-size", "32", "--quiet"]


def _torchrun(*args, script=None, timeout=240):
    """`python -m torch.distributed.run --nproc_per_node 2 --standalone` of `-m lowshot` (or of `script`)."""
    target = [str(script)] if script else ["-m", "lowshot"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                           *target, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _files(directory):
    return sorted(p for p in directory.rglob("*") if p.is_file())


@pytest.mark.slow
def test_torchrun_extraction_then_plain_fit(tmp_path, capsys, monkeypatch):
    cache, results = tmp_path / "features", tmp_path / "results"
    run = _torchrun(*BENCH, "--cache", str(cache), "--results", str(results), "--extract-only")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "features extracted over 2 ranks" in run.stdout and "2 computed" in run.stdout
    assert not results.exists() or not list(results.rglob("*.json"))  # extraction only: no record
    npys = [p for p in _files(cache) if p.suffix == ".npy"]
    assert len(npys) == 2 and all(p.with_suffix(".json").is_file() for p in npys)  # train union + test set
    assert [p for p in _files(cache) if p.suffix != ".npy" and p.suffix != ".json"] == []  # no shard, tmp, marker
    assert all(json.loads(p.with_suffix(".json").read_text())["ranks"] == 2 for p in npys)

    # The merged files are the features a single process computes for the same images, under the same keys.
    from lowshot.tasks.classification import LowShotClassification, embedded_data

    model, data = load_model("dino-tiny"), embedded_data(LowShotClassification.settings)
    union = np.unique([data.train.index_of(n) for names, _ in data.splits.values() for n in names])
    transform, feature = model.transform(data.resize, data.crop), model.lowshot_feature
    reference = FeatureCache(tmp_path / "reference")
    for source, indices in ((data.train, union), (data.test, np.arange(len(data.test)))):
        expected = reference.get(model, source, indices, transform, [feature], workers=0, progress=False)[feature]
        key, _ = reference.key(model, source, indices, transform, feature)
        merged = np.load(cache / key[:2] / f"{key}.npy")
        assert merged.shape == expected.shape and merged.dtype == expected.dtype
        np.testing.assert_allclose(merged, expected, rtol=0, atol=1e-5)

    # A plain run (no torchrun) fits from the cache: nothing computed, the records written.
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    capsys.readouterr()
    def features():
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in _files(cache) if p.suffix in (".npy", ".json")}

    extracted = features()
    assert main(BENCH + ["--cache", str(cache), "--results", str(results)]) == 0
    assert features() == extracted  # read, never recomputed
    records, problems = load_records(results)
    assert not problems and sorted((r["setting"], r["seed"], r["classifier"]) for r in records) == [
        ("1img", seed, "logreg") for seed in (1, 2, 3)]
    out = capsys.readouterr().out
    assert "3 record(s) written" in out and "2 hit(s), 0 computed" in out
    assert not [p for p in _files(tmp_path) if ".tmp" in p.name]


FAILING_RANK = textwrap.dedent("""
    import os, sys
    import torch
    from lowshot import model_zoo
    from lowshot.benchmark.cli import main

    load = model_zoo.load_model

    def load_nan_on_rank1(*args, **kwargs):  # rank 1's model gives NaN features; rank 0's is fine
        model = load(*args, **kwargs)
        if os.environ["RANK"] == "1":
            with torch.no_grad():
                model.backbone.vit.norm.weight[0] = float("nan")
        return model

    model_zoo.load_model = load_nan_on_rank1
    try:
        sys.exit(main(sys.argv[1:] + ["--debug"]))  # --debug: the error propagates, with its traceback
    except Exception as e:
        with open(os.path.join(os.environ["OUTCOME_DIR"], "rank" + os.environ["RANK"]), "w") as f:
            f.write(type(e).__name__ + ": " + str(e))
        raise
""")


@pytest.mark.slow
def test_failing_rank_fails_every_rank_and_leaves_no_file(tmp_path, monkeypatch):
    script, outcome, cache = tmp_path / "failing_rank.py", tmp_path / "outcome", tmp_path / "features"
    script.write_text(FAILING_RANK)
    outcome.mkdir()
    monkeypatch.setenv("OUTCOME_DIR", str(outcome))
    run = _torchrun(*BENCH, "--cache", str(cache), "--results", str(tmp_path / "results"), "--extract-only",
                    script=script)
    assert run.returncode != 0
    messages = {p.name: p.read_text() for p in outcome.iterdir()}
    assert sorted(messages) == ["rank0", "rank1"], run.stdout + run.stderr  # both ranks raised, none hung
    for message in messages.values():
        assert message.startswith("ShardError: dino-tiny: sharded extraction of synthetic-scenes-")
        assert "failed on 1 of 2 rank(s)" in message and "rank 1: NonFiniteError" in message and "NaN" in message
    assert _files(cache) == []  # no cache file, no shard file, no marker


def test_torchrun_without_extract_only_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(BENCH + ["--cache", str(tmp_path / "features"), "--results", str(tmp_path / "results")]) == 2
    assert re.search("add --extract-only.*without torchrun", capsys.readouterr().err)
