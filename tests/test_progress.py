"""What a run tells while it runs: the plan before any work, bars on a terminal and plain lines otherwise, warnings
that name their record, the non-converged list at the end; the CLI's help and `lowshot tasks`."""
from __future__ import annotations

import argparse
import io

import pytest

from lowshot.benchmark.cli import build_parser, main
from lowshot.benchmark.progress import Progress, fitted
from lowshot.tasks.classifiers import logistic
from lowshot.tasks.registry import TASKS

from .conftest import fixture_model_args


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_on_a_terminal_and_plain_lines_elsewhere(monkeypatch):
    monkeypatch.delenv("LOWSHOT_PROGRESS", raising=False)
    tty = Terminal()
    with Progress(5, "fits", "record", stream=tty) as bar:
        for _ in range(5):
            bar.update()
    assert "\r" in tty.getvalue() and "5/5" in tty.getvalue()
    piped = io.StringIO()
    with Progress(5, "fits", "record", stream=piped, interval=0) as bar:
        for _ in range(5):
            bar.update()
    lines = piped.getvalue().splitlines()
    assert "\r" not in piped.getvalue()
    assert lines[0].startswith("fits: 1/5 record (20 %), ") and "left" in lines[0]
    assert lines[-1].startswith("fits: 5/5 record, done in ") and len(lines) == 5
    quiet = io.StringIO()
    with Progress(5, "fits", stream=quiet, interval=3600) as bar:  # a short job: one line, when it ends
        bar.update(5)
    assert len(quiet.getvalue().splitlines()) == 1
    off = io.StringIO()
    with Progress(5, "fits", stream=off, enabled=False) as bar:
        bar.update(5)
    assert off.getvalue() == ""


def test_a_long_description_leaves_the_bar_room_on_a_narrow_terminal():
    desc = "msn-tiny: features cls, cls_prenorm of synthetic-scenes-v2/classification/train/64px"
    assert fitted(desc, 200) == desc
    assert fitted(desc, 80) == "msn-tiny: …cation/train/64px"  # 28 columns: the model and the images it reads
    assert fitted("x" * 100, 60) == "…" + "x" * 23


@pytest.mark.slow
def test_plan_progress_named_warnings_and_the_non_converged_list(tmp_path, capsys, monkeypatch):
    """A solver capped at 2 iterations: each record's warning names it, the end-of-run table marks it and the run
    ends with the list; a second run plans nothing to compute."""
    defaults = list(logistic.LogisticRegression.__init__.__defaults__)
    defaults[1] = 2  # max_iter
    monkeypatch.setattr(logistic.LogisticRegression.__init__, "__defaults__", tuple(defaults))
    monkeypatch.setenv("LOWSHOT_LOG_INTERVAL", "0")
    args = ["bench", *fixture_model_args(), "--task", "embedded-lowshot", "--setting", "1img", "--classifier",
            "logreg", "--results", str(tmp_path / "r"), "--cache", str(tmp_path / "c"), "--workers", "0"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    model = "dino_pretrain.pth"
    plan = out.index("plan (per model x task")
    assert f"  {model} x embedded-lowshot: 3 record(s) to compute, 0 done; feature sets: 0 cached, 2 to extract" in out
    assert plan < out.index("== ")  # before any work
    assert f"{model} embedded-lowshot: fits: 3/3 record, done in" in err  # plain lines: stderr is not a terminal
    assert "\r" not in err
    for seed in (1, 2, 3):
        assert (f"lowshot: warning: {model} embedded-lowshot 1img seed {seed} logreg: LogisticRegression did not "
                "converge") in err
    assert "NOT CONVERGED: 3 of 3" in out
    tail = out[out.index("non-converged records (3)"):]
    assert all(f"{model} embedded-lowshot 1img seed {s} logreg: " in tail for s in (1, 2, 3))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"  {model} x embedded-lowshot: 0 record(s) to compute, 3 done (nothing to do)" in out
    assert "total: 0 record(s) to compute, 3 done; feature sets: 0 cached, 0 to extract" in out


def test_every_verb_in_the_help_and_every_option_explained(capsys):
    with pytest.raises(SystemExit) as done:  # `lowshot --help` as the command runs it (no verb's options declared)
        main(["--help"])
    assert done.value.code == 0
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(verbs.choices) == {"models", "tasks", "bench", "leaderboard", "plot", "report", "status", "pretrain",
                                  "compare"}
    helps = {c.dest: c.help for c in verbs._choices_actions}
    for verb, sub in verbs.choices.items():
        assert verb in text and helps[verb] and helps[verb][:30] in " ".join(text.split())
        for action in sub._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"{verb} {action.option_strings or action.dest}"


def test_tasks_lists_settings_classifiers_metric_and_where_the_data_is(tmp_path, capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name, entry in TASKS.items():
        block = out[out.index(f"{name}  [{entry.family}]"):].split("\n\n")[0]
        assert all(s.name in block for s in entry.declared_settings)
        assert ", ".join(entry.protocol.classifiers) in block and entry.protocol.main_score in block
    assert "embedded-seg  [segmentation]" in out and "not looked for (no --data-root given)" in out
    voc = tmp_path / "data" / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "ImageSets"):
        (voc / sub).mkdir(parents=True)
    assert main(["tasks", "--data-root", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    lines = {line.split("  [")[0]: i for i, line in enumerate(out.splitlines()) if "  [" in line}
    data_line = out.splitlines()[lines["voc07-multilabel"] + 4]
    assert data_line == f"  data:        expects {TASKS['voc07-multilabel'].folder}; found: {voc}"
    assert "found: no (could not find imagenet under" in out[out.index("imagenet-lowshot"):]
