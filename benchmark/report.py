"""`lowshot report RESULTS`: one self-contained static HTML page of a results directory.

The page holds the per-task leaderboard tables (`benchmark.task_tables`; sortable by any column), the figures
(`benchmark.plots.draw_task`, PNG embedded as data: URIs; error bars ± std over seeds, or with `bands="ci"` the
cells' 95 % intervals that the tables show) and, for every cell, its provenance one click away: the
records it averages (path, seed, score, convergence, split source, when), the checkpoint sha256, the
configuration digest, the setting as the task declares it, the classifier, feature and hyper-parameters and how
they were chosen; for a published number, its source. Style sheet and script are inlined
(`benchmark.report_assets`): the page makes no request, to a server or anywhere else.
"""
from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path

from lowshot.model_zoo.errors import LowshotError
from lowshot.model_zoo.files import atomic_write_text
from lowshot.tasks.registry import declaration

from .leaderboard import load_all
from .figure_style import check_bands
from .plots import draw_task
from .escaping import script_json
from .report_assets import CSS, JS
from .task_tables import TaskTable, labelled_text, task_tables
from .verdicts import verdict_lines


FIGURE_NOTES = {
    "std": "error bars are ± sample std over the seeds; half-filled markers are single seeds; hollow markers "
           "published numbers; dashed line: chance.",
    "ci": "error bars are the cells' 95 % intervals (those in the table); a point without a bar has none (one seed, "
          "no per-image evidence); half-filled markers are single seeds (their interval covers the evaluation images "
          "only); hollow markers published numbers (no interval); dashed line: chance.",
}


def _figure_uri(summary, task: str, classifier: str, bands: str) -> str | None:
    try:
        fig = draw_task(summary, task, classifier, title=f"{task} ({classifier})", bands=bands)
    except LowshotError:
        return None
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _setting_text(task: str, setting: str) -> str:
    entry = declaration(task)
    for s in entry.declared_settings if entry else ():
        if s.name == setting:
            how = (f"{s.shots} labelled image(s) per class" if s.kind == "shots" else
                   f"{s.fraction:g} of the training images" if s.kind == "fraction" else "every training image")
            return f"{s.name} (tick {s.label!r}): {how}; declared seeds {' '.join(map(str, s.seeds))}"
    return f"{setting} (not declared by the task)"


def _provenance(table: TaskTable, row, setting: str, cell, records: dict, frame, results: Path) -> dict:
    title = f"{table.task} {setting} {row.classifier}: {row.model} ({row.source})"
    lines = [f"{cell.text(2)}", f"setting: {_setting_text(table.task, setting)}",
             f"labelled images: {labelled_text(table, setting)}"]
    if table.chance is not None:
        lines.append(f"chance level: {table.chance:.2f}")
    if row.source == "published":
        lines += [f"published number; source: {cell.reference}"]
        return {"title": title, "text": "\n".join(lines)}
    mine = frame[(frame["config_digest"] == cell.config_digest) & (frame["task"] == table.task)
                 & (frame["setting"] == setting) & (frame["classifier"] == row.classifier)]
    shas = sorted({str(v) for v in mine["checkpoint_sha256"] if v})
    lines += [f"checkpoint sha256: {', '.join(shas) or 'not recorded'}",
              f"configuration (config_digest): {cell.config_digest}"]
    first = records.get(str(mine["path"].iloc[0])) if len(mine) else None
    if first:
        lines += [f"classifier: {row.classifier}, feature {first.get('feature')}, preprocessing "
                  f"{first.get('preprocessing')}",
                  f"hyper-parameters: {json.dumps(first.get('hyperparameters'), sort_keys=True)}",
                  f"chosen by: {first.get('hyperparameters_chosen_by')}"]
    lines += verdict_lines(cell.verdict)
    lines.append(f"records ({len(mine)}):")
    for _, r in mine.sort_values("seed").iterrows():
        state = {True: "converged", False: "NOT CONVERGED", None: "no convergence criterion"}[r["converged"]]
        path = Path(str(r["path"]))
        shown = path.relative_to(results) if path.is_relative_to(results) else path
        lines.append(f"  seed {r['seed']}: {r['score']:.3f}  {state}  {shown}  (split: {r['split_source']}; "
                     f"finished {r['finished']})")
    return {"title": title, "text": "\n".join(lines)}


def _table_html(table: TaskTable, index: int, records: dict, frame, results: Path, provenance: dict) -> str:
    columns = ["model", "method", "classifier", "source"] + table.settings
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in table.rows:
        cells = [f'<td class="text" data-sort="{html.escape(v)}">{html.escape(v)}</td>'
                 for v in (r.model, r.method, r.classifier, r.source)]
        for s in table.settings:
            cell = r.cells.get(s)
            if cell is None:
                cells.append('<td data-sort="">–</td>')
                continue
            key = f"t{index}c{len(provenance)}"
            provenance[key] = _provenance(table, r, s, cell, records, frame, results)
            flag = " flag" if cell.not_converged else ""
            cells.append(f'<td class="cell{flag}" data-sort="{cell.mean:.6f}" data-cell="{key}" '
                         f'title="click: provenance">{html.escape(cell.text())}</td>')
        body.append(f'<tr class="{r.source}">' + "".join(cells) + "</tr>")
    return (f'<table class="board" id="table-{index}" data-task="{html.escape(table.task)}" '
            f'data-panel="panel-{index}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            f'<div class="provenance" id="panel-{index}"></div>')


def render(results: str | Path, bands: str = "std") -> str:
    """The report page of `results` as one HTML string; `bands`: the figures' error bars, ± std over seeds or the
    cells' 95 % intervals ("ci")."""
    check_bands(bands)
    shown, results = str(results), Path(results).resolve()  # the heading names the folder as it was given
    raw, frame, summary = load_all(results)
    records = {str(r["path"]): r for r in raw}
    provenance: dict = {}
    sections = []
    tables = task_tables(summary)
    for i, table in enumerate(tables):
        counts = "; ".join(f"{s}: {labelled_text(table, s)}" for s in table.settings)
        chance = f"; chance level {table.chance:.1f}" if table.chance is not None else ""
        parts = [f'<h2 id="task-{i}">{html.escape(table.heading)}</h2>',
                 f'<p class="note">{html.escape(table.family)}, {html.escape(table.metric_label)}{chance}. Columns in '
                 f"the order of labelled images: {html.escape(counts)}.</p>",
                 _table_html(table, i, records, frame, results, provenance)]
        ours = {r.classifier for r in table.rows if r.source == "ours"}
        for classifier in [c for c in table.classifiers if c in ours]:
            uri = _figure_uri(summary, table.task, classifier, bands)
            if uri:
                parts.append(f'<figure><img alt="{html.escape(table.task)} {html.escape(classifier)}" src="{uri}">'
                             f"<figcaption class=\"note\">{html.escape(table.task)}, {html.escape(classifier)}: "
                             f"{html.escape(FIGURE_NOTES[bands])}</figcaption></figure>")
        sections.append("\n".join(parts))
    data = script_json(provenance)
    toc = " · ".join(f'<a href="#task-{i}">{html.escape(t.heading)}</a>' for i, t in enumerate(tables))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lowshot-bench report: {html.escape(results.name)}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<style>{CSS}</style></head>
<body>
<h1>lowshot-bench report: {html.escape(shown)}</h1>
<p class="note">{len(raw)} records, written {time.strftime("%Y-%m-%d %H:%M")}. One table per task; cells are
mean ± sample std over the seeds, [its 95 % interval], with the number of seeds (n); † marks a cell with a record
whose solver did not converge; ▲ the best cell of its column, ≈ a cell not significantly different from it. Click
a column header to sort by it (again to reverse); click a cell for its provenance and its comparison with the
column's best.</p>
<p>{toc}</p>
{"".join(sections)}
<script type="application/json" id="provenance">{data}</script>
<script>{JS}</script>
</body></html>
"""


def write_report(results: str | Path, out: str | Path | None = None, bands: str = "std") -> Path:
    """Write the report of `results` to `out` (default `<results>/report.html`); returns its path."""
    out = Path(out) if out else Path(results) / "report.html"
    atomic_write_text(out, render(results, bands))
    return out
