"""Names the suite did not make (records can be written by anyone) in everything it writes: Markdown tables, CSV
tables, the report's JSON inside <script>, figure legends. Each is shown as the same characters, never as HTML,
a formula, an extra table cell, the end of a script or mathtext."""
from __future__ import annotations

import csv
import html
import io
import json
import re
from html.parser import HTMLParser

import pytest

from lowshot.benchmark.escaping import markdown_text
from lowshot.benchmark.leaderboard import load_summary, write_tables
from lowshot.benchmark.plots import draw_task
from lowshot.benchmark.records import record_path, write_record
from lowshot.benchmark.report import render
from lowshot.benchmark.transfer_report import draw_transfer, write_transfer_tables

XSS = "<img src=x onerror=alert(1)>"
PIPE = "left|right"
FORMULAS = ['=HYPERLINK("http://evil","x")', "+1+2", "-3+4", "@SUM(1,1)", "\tx=1", "\rx"]
SCRIPT = "<!--<script>"
MATH_BROKEN = "m$\\notacommand{$"  # invalid mathtext: matplotlib would stop the figure
MATH_VALID = "$\\alpha$-net"  # valid mathtext: would be drawn as a Greek letter, not as its name
UNDERSCORE = "_hidden"  # matplotlib leaves labels starting with _ out of legends


def _tables(results, out):
    """What `lowshot leaderboard RESULTS --out OUT` writes, without the published reference rows."""
    frame, summary = load_summary(results, reference=None)
    return write_tables(frame, summary, out)


def _record(results, model, score, task="imagenet-lowshot", setting="1img", seed=1, family="classification",
            classifier="logreg", method="dino", **extra):
    rec = {"model": model, "method": method, "task": task, "family": family, "setting": setting, "seed": seed,
           "classifier": classifier, "main_score": "top1", "metrics": {"top1": score}, "num_train": 1000,
           "num_classes": 1000, "config_digest": f"{abs(hash(model)):x}cfg", "chance": {"value": 0.1},
           "convergence": {"converged": True}, **extra}
    write_record(record_path(results, model, task, setting, seed, classifier, rec["config_digest"]), rec)


class _Cells(HTMLParser):
    """The text of each table row's cells in rendered HTML, and every element seen."""

    def __init__(self):
        super().__init__()
        self.rows, self.tags, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_markdown_tables_show_hostile_names_as_text_in_their_own_cell(tmp_path):
    markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py renders the Markdown as GitHub does")
    names = [XSS, PIPE, "back\\slash|", "a&b \"quoted\" 'single'"]
    for i, name in enumerate(names):
        _record(tmp_path / "runs", name, 40.0 + i, method=name)
    md = _tables(tmp_path / "runs", tmp_path / "out")["markdown"].read_text()
    page = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    parsed = _Cells()
    parsed.feed(page)
    assert "img" not in parsed.tags  # raw HTML allowed, yet no element comes from a name
    rows = {}
    for row in parsed.rows:  # the task's table first (the mean-rank table after it names the models again)
        if row:
            rows.setdefault(row[0], row)
    header = rows["model"]
    for i, name in enumerate(names):
        row = rows[name]  # the name, character for character, as the first cell
        assert len(row) == len(header) and row[1] == name
        assert row[header.index("1img")].startswith(f"{40.0 + i:.1f} (n=1)")  # the score stays in its column
    ranks = md[md.index("## Mean rank"):]  # the mean-rank table names the models as text too
    assert all(markdown_text(name) in ranks for name in names)


def test_markdown_transfer_mean_escapes_names(tmp_path):
    markdown_it = pytest.importorskip("markdown_it")
    for task in ("transfer-cifar10", "transfer-cifar100"):
        _record(tmp_path / "runs", XSS + PIPE, 30.0, task=task, setting="1shot", family="transfer")
    _, summary = load_summary(tmp_path / "runs", reference=None)
    paths = write_transfer_tables(summary, tmp_path / "out")
    parsed = _Cells()
    parsed.feed(markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(
        paths["transfer_mean_md"].read_text()))
    assert "img" not in parsed.tags
    row = next(r for r in parsed.rows if r and r[0] == XSS + PIPE)
    assert len(row) == len(parsed.rows[0]) and row[2] == "30.0 (2/13)"
    mean = list(csv.reader(io.StringIO(paths["transfer_mean"].read_text())))
    assert mean[1][0] == XSS + PIPE  # not a formula: as it is


def _csv(path):
    with open(path, newline="") as f:  # a carriage return inside a quoted cell stays one
        return list(csv.DictReader(f))


def test_csv_tables_neutralise_formula_cells_and_keep_numbers(tmp_path):
    for i, name in enumerate(FORMULAS):
        _record(tmp_path / "runs", name, -1.5 - i)
    paths = _tables(tmp_path / "runs", tmp_path / "out")
    for table in ("records", "summary", "leaderboard"):
        rows = _csv(paths[table])
        assert {r["model"] for r in rows} == {"'" + name.replace("\r", "\n") for name in FORMULAS}, table
        for row in rows:
            for column, value in row.items():  # no cell of any column starts a formula
                assert not value.startswith(("=", "+", "@", "\t", "\r")), (table, column, value)
                assert not value.startswith("-") or re.fullmatch(r"-\d+(\.\d+)?", value), (table, column, value)
    records = {r["model"]: r for r in _csv(paths["records"])}
    assert float(records["'" + FORMULAS[0]]["score"]) == -1.5  # a negative number stays a number
    summary = {r["model"]: r for r in _csv(paths["summary"])}
    assert summary["'" + FORMULAS[2]]["mean"] == "-3.500"
    wide = {r["model"]: r for r in _csv(paths["leaderboard"])}
    assert wide["'" + FORMULAS[1]]["imagenet-lowshot 1img logreg mean"] == "-2.500"


def test_csv_column_names_from_records_are_neutralised(tmp_path):
    _record(tmp_path / "runs", "dino", 50.0, task="=cmd|' /C calc'!A0", family="classification")
    paths = _tables(tmp_path / "runs", tmp_path / "out")
    with open(paths["leaderboard"], newline="") as f:
        header = next(csv.reader(f))
    assert all(not h.startswith(("=", "+", "-", "@")) for h in header)
    assert "'=cmd|' /C calc'!A0 1img logreg mean" in header


def test_report_json_in_script_cannot_end_or_change_the_script(tmp_path):
    names = [SCRIPT, "</script><script>alert(1)</script>", "a&b>c"]
    for i, name in enumerate(names):
        _record(tmp_path / "runs", name, 40.0 + i)
    page = render(tmp_path / "runs")
    found = re.search(r'<script type="application/json" id="provenance">(.*?)</script>\s*<script>', page, re.S)
    assert found, "the provenance block is not followed by the page's own script"
    block = found.group(1)
    assert not set("<>&") & set(block)  # nothing the HTML tokenizer could read inside script data
    titles = " ".join(p["title"] for p in json.loads(block).values())
    for name in names:
        assert name in titles  # JSON.parse gives the names back as they were
        assert html.escape(name) in page  # and the table shows them escaped
    assert page.count("<script") == 2


def _legend_texts(fig):
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    return [t for legend in legends for t in legend.get_texts()]


def _shown(text) -> tuple[str, bool]:
    """What matplotlib draws for a Text: (the string, whether it is read as mathtext)."""
    return text._preprocess_math(text.get_text())


@pytest.mark.parametrize("figure", ["task", "transfer"])
def test_figure_legends_show_names_literally(tmp_path, figure):
    names = [MATH_BROKEN, MATH_VALID, UNDERSCORE, XSS]
    task, family, setting = (("imagenet-lowshot", "classification", "1img") if figure == "task" else
                             ("transfer-cifar10", "transfer", "1shot"))
    for i, name in enumerate(names):
        _record(tmp_path / "runs", name, 40.0 + i, task=task, family=family, setting=setting)
    _, summary = load_summary(tmp_path / "runs", reference=None)
    fig = draw_task(summary, task) if figure == "task" else draw_transfer(summary)
    fig.savefig(io.BytesIO(), format="png")  # an invalid mathtext name would raise here
    shown = [_shown(t) for t in _legend_texts(fig)]
    assert not any(math for _, math in shown)
    labels = [s for s, _ in shown]
    suffix = "" if figure == "task" else " logreg"
    for name in names:
        assert any(label.strip() == name + suffix for label in labels), (name, labels)
