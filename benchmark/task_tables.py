"""One table per task: rows the models (per classifier and source), columns the task's settings in the order of
their labelled images per class (`benchmark.positions`), cells mean ± std over seeds with the number of seeds.

`task_tables(summary)` builds them once; `leaderboard.md` (`markdown`) and the HTML report (`benchmark.report`)
render the same tables. A cell that two configurations of one row claim shows the most recent one (as
`leaderboard.csv`); every configuration stays in summary.csv.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from lowshot.tasks.registry import declaration

from .escaping import markdown_text as md
from .positions import ordered_settings, setting_positions
from .verdicts import VERDICT_COLUMNS, cell_suffix, interval_text


@dataclass
class Cell:
    mean: float
    std: float | None  # None: one seed
    n_seeds: int
    not_converged: int  # records of this cell whose solver stopped before converging
    config_digest: str
    seeds: str
    reference: str = ""  # the published source of a reference number ("" for ours)
    verdict: dict = field(default_factory=dict)  # benchmark.verdicts.VERDICT_COLUMNS of the cell (ours only)

    def text(self, digits: int = 1) -> str:
        """`mean ± std [95 % interval] (n=seeds)`, `†` when a record did not converge, ▲ / ≈ the best of its column
        / not significantly different from it."""
        spread = "" if self.std is None else f" ± {self.std:.{digits}f}"
        flag = " †" if self.not_converged else ""
        interval = interval_text(self.verdict.get("ci_low"), self.verdict.get("ci_high"), digits)
        return f"{self.mean:.{digits}f}{spread}{interval} (n={self.n_seeds}){flag}{cell_suffix(self.verdict.get('mark'))}"


@dataclass
class Row:
    model: str  # with its variant: "dino-vits16 [num_heads=4]"
    method: str
    classifier: str
    source: str  # "ours" or "published"
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def references(self) -> list[str]:
        return list(dict.fromkeys(c.reference for c in self.cells.values() if c.reference))


@dataclass
class TaskTable:
    task: str
    family: str
    main_score: str
    metric_label: str
    settings: list[str]  # in the order of their positions
    positions: dict[str, float]  # labelled images per class (or the declared x, see benchmark.positions)
    labels: dict[str, str]  # the declared tick labels
    chance: float | None
    rows: list[Row]
    num_train: dict[str, float]  # mean labelled images of our records per setting (absent: none recorded)

    @property
    def heading(self) -> str:
        """The task's name; with the family in brackets for a table of another family than the task's own (its
        label-free scores), so that two tables of one task never share a heading."""
        entry = declaration(self.task)
        return self.task if entry is None or entry.family == self.family else f"{self.task} ({self.family})"

    @property
    def classifiers(self) -> list[str]:
        return list(dict.fromkeys(r.classifier for r in self.rows))

    @property
    def references(self) -> list[str]:
        return list(dict.fromkeys(ref for r in self.rows for ref in r.references))


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def task_table(summary: pd.DataFrame, task: str, family: str) -> TaskTable:
    rows_of = summary[(summary["task"] == task) & (summary["family"] == family)]
    entry = declaration(task)
    declared = entry if entry is not None and entry.family == family else None
    protocol = declared.protocol if declared else None
    labels = {s.name: s.label for s in declared.declared_settings} if declared else {}
    order = {c: i for i, c in enumerate(protocol.classifiers)} if protocol else {}
    positions = setting_positions(rows_of, task)
    chances = pd.to_numeric(rows_of.get("chance", pd.Series(dtype=float)), errors="coerce").dropna()
    rows: dict[tuple, Row] = {}
    ordered = rows_of.assign(kind=rows_of["source"].map(lambda v: "published" if str(v).startswith("published")
                                                        else "ours"))
    ordered = ordered.assign(_c=ordered["classifier"].map(lambda c: order.get(c, len(order))),
                             _k=(ordered["kind"] != "ours").astype(int))
    ordered = ordered.sort_values(["_c", "classifier", "_k", "model", "variant"], kind="stable")
    def model_of(r) -> str:
        return f"{r['model']} [{r['variant']}]" if isinstance(r["variant"], str) and r["variant"] else str(r["model"])

    for _, r in ordered.iterrows():
        rows.setdefault((model_of(r), r["classifier"], r["kind"]),
                        Row(model_of(r), r["method"] if isinstance(r["method"], str) else "–", str(r["classifier"]),
                            r["kind"]))
    for _, r in ordered.sort_values("finished", kind="stable").iterrows():  # the most recent configuration last
        reference = str(r["source"])[len("published: "):] if r["kind"] == "published" else ""
        rows[(model_of(r), r["classifier"], r["kind"])].cells[r["setting"]] = Cell(
            float(r["mean"]), _number(r["std"]), int(r["n_seeds"]), int(_number(r.get("not_converged")) or 0),
            str(r["config_digest"]), str(r.get("seeds") or ""), reference,
            {k: r[k] for k in VERDICT_COLUMNS if k in r and not pd.isna(r[k])})
    ours = ordered[ordered["kind"] == "ours"]
    counts = pd.to_numeric(ours.get("num_train", pd.Series(dtype=float)), errors="coerce")
    num_train = {k: float(v) for k, v in counts.groupby(ours["setting"]).mean().items() if not math.isnan(v)}
    return TaskTable(task, family, protocol.main_score if protocol else str(rows_of["main_score"].iloc[0]),
                     protocol.metric_label if protocol else str(rows_of["main_score"].iloc[0]),
                     ordered_settings(rows_of, task), positions, labels,
                     float(chances.mean()) if len(chances) else None, list(rows.values()), num_train)


def task_tables(summary: pd.DataFrame) -> list[TaskTable]:
    """One table per (task, family) of `summary`, tasks in the registry's order (unregistered ones last), a task's
    own family before its label-free scores."""
    if summary.empty:
        return []
    pairs = list(dict.fromkeys(zip(summary["task"], summary["family"])))
    from lowshot.tasks.registry import TASKS
    index = {name: i for i, name in enumerate(TASKS)}
    tables = [task_table(summary, task, family) for task, family in pairs]
    return sorted(tables, key=lambda t: (index.get(t.task, len(index)), t.task, t.heading != t.task, t.family))


def labelled_text(t: TaskTable, setting: str) -> str:
    """`20 images (1.25 per class)`, or the declared position when no record of ours says how many."""
    x = t.positions[setting]
    per_class = "?" if math.isnan(x) else f"{x:.3g}"
    if setting in t.num_train:
        n = t.num_train[setting]
        return f"{n:.0f} images ({per_class} per class)" if n >= 100 else f"{n:.3g} images ({per_class} per class)"
    return f"{per_class} per class (declared)"


VERDICTS_NOTE = ("[low, high]: the cell's 95 % interval (t over seeds widened by a bootstrap of the evaluation images "
                 "where records keep their per-image evidence; t over seeds where they do not). ▲: the best cell of "
                 "its column (classifier, setting); ≈: not significantly different from it (paired test over seeds "
                 "and images, Holm-corrected across the task's table; summary.csv has the p-values).")


def markdown(tables: list[TaskTable]) -> str:
    """`leaderboard.md`: one section and table per task."""
    out = ["# Leaderboard", "",
           "One table per task. Cells: mean ± sample std over the seeds, and the number of seeds (n); one seed has "
           "no std. Columns: the task's settings in the order of their labelled images per class. † : at least one "
           "record of the cell stopped before its solver converged (see records.csv, column `converged`). "
           f"{VERDICTS_NOTE}", ""]
    for t in tables:
        classifier_column = len(t.classifiers) > 1
        counts = "; ".join(f"{md(s)}: {labelled_text(t, s)}" for s in t.settings)
        chance = f"; chance level {t.chance:.1f}" if t.chance is not None else ""
        out += [f"## {md(t.heading)}", "", f"{md(t.family)}, {md(t.metric_label)}{chance}. Labelled images: {counts}.",
                ""]
        header = ["model", "method"] + (["classifier"] if classifier_column else []) + ["source"] + \
            [md(s) for s in t.settings]
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        refs = t.references
        for r in t.rows:
            source = r.source if not r.references else "published " + ", ".join(
                f"[{refs.index(ref) + 1}]" for ref in r.references)
            cells = [md(r.model), md(r.method)] + ([md(r.classifier)] if classifier_column else []) + [source]
            cells += [r.cells[s].text() if s in r.cells else "–" for s in t.settings]
            out.append("| " + " | ".join(cells) + " |")
        out += [""] + [f"[{i + 1}] {md(ref)}" for i, ref in enumerate(refs)] + ([""] if refs else [])
    return "\n".join(out)
