"""benchmark/cli.py: the verbs, choices that come from the registries, model aliases, and the messages a run ends
with when its data is not there."""
from __future__ import annotations

import pytest

from lowshot.benchmark.bench_command import resolve_models
from lowshot.benchmark.cli import build_parser, main
from lowshot.benchmark.records import record_path, write_record
from lowshot.model_zoo.errors import BadInputError
from lowshot.tasks.classifiers import CLASSIFIERS


def test_every_verb_and_the_classifier_choices_from_the_registry():
    parser = build_parser()
    for verb in ("models", "bench", "leaderboard", "plot", "pretrain"):
        assert parser.parse_args([verb] + {"bench": ["--model", "x"], "plot": ["figure1"],
                                            "pretrain": ["--out", "o"]}.get(verb, [])).command == verb
    args = parser.parse_args(["bench", "--model", "x", "--classifier", *CLASSIFIERS])
    assert args.classifier == list(CLASSIFIERS) == ["logreg", "knn", "linear"]
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["bench", "--model", "x", "--classifier", "svm"])
    assert exit_.value.code == 2


def test_method_aliases():
    assert resolve_models(["all"], embedded=True) == ["dino-tiny", "ibot-tiny", "mae-tiny", "msn-tiny",
                                                       "maskcluster-tiny"]
    assert resolve_models(["dino", "mae", "my.pth"], embedded=False) == ["dino-vits16", "mae-vitb16", "my.pth"]
    with pytest.raises(BadInputError, match="no public maskcluster checkpoint"):
        resolve_models(["maskcluster"], embedded=False)


def test_missing_data_ends_the_run_with_its_reason(tmp_path, capsys):
    assert main(["bench", "--model", "dino-tiny", "--task", "voc07-multilabel", "--results", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == "lowshot bench: error: voc07-multilabel: this task needs --data-root\n"
    (tmp_path / "empty").mkdir()
    assert main(["bench", "--model", "dino-tiny", "--data-root", str(tmp_path / "empty"), "--results",
                 str(tmp_path / "r")]) == 2
    assert f"no task to run: no dataset found under {tmp_path / 'empty'}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing written


def test_leaderboard_and_plot_commands_read_the_records(tmp_path, capsys):
    for seed, score in ((1, 10.0), (2, 12.0)):
        rec = {"model": "dino-tiny", "method": "dino", "task": "embedded-lowshot", "family": "classification",
               "setting": "5img", "seed": seed, "classifier": "logreg", "main_score": "top1",
               "metrics": {"top1": score}}
        write_record(record_path(tmp_path, "dino-tiny", "embedded-lowshot", "5img", seed, "logreg"), rec)
    assert main(["leaderboard", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # two seeds and no per-image evidence: a t-interval over the seeds, 11 ± t(0.975, 1) x 1.0
    assert "| dino-tiny | dino | ours | 11.0 ± 1.4 [-1.7, 23.7] (n=2) |" in out
    assert f"markdown: {tmp_path / 'leaderboard.md'}" in out
    assert main(["plot", "figure1", str(tmp_path), "--out", str(tmp_path / "fig")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "fig" / f"figure1_embedded-lowshot.{e}")
                                               for e in ("png", "pdf")]


def test_device_auto_is_the_default_and_resolves_before_use(monkeypatch):
    """`--device auto` (the default) is a concrete device once parsed: cuda when CUDA is available, else cpu, so the
    records' environment and everything downstream see cpu / cuda, never 'auto'."""
    import torch

    parser = build_parser()
    bench = ["bench", "--model", "x"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parser.parse_args(bench).device == "cpu" == parser.parse_args(bench + ["--device", "auto"]).device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert parser.parse_args(bench).device == "cuda"
    assert parser.parse_args(bench + ["--device", "cpu"]).device == "cpu"
    help_text = parser._subparsers._group_actions[0].choices["bench"].format_help()
    assert "default: auto = cuda when CUDA is available, else cpu" in " ".join(help_text.split())
