"""The tables' own verdicts: a 95 % interval per cell, the best cell of each column and the cells not significantly
different from it, and a mean rank per model (`benchmark.statistics` computes them).

A column is one (task, table family, setting, classifier). Its best cell has the highest mean; every other cell of
the column is compared with it (`statistics.compare_cell`: paired by seed and image); the p-values of all these
comparisons in one task's table are Holm-corrected together, and a cell whose corrected p is >= 0.05 is "tied"
with the best. Rank in a column: the best and its ties share rank 1; every other cell is ranked by its mean after
them (competition ranking: 1, 1, 3). A model's mean rank is the mean of its ranks over the columns where at least
two models have a cell. Published reference rows (no records) get no verdict.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from lowshot.model_zoo.errors import BadInputError
from lowshot.tasks.spectrum import LABEL_FREE

from .escaping import markdown_text
from .statistics import CONFIDENCE, cell_interval, compare_cell, holm

VERDICT_COLUMNS = ["ci_low", "ci_high", "ci_method", "mark", "best_model", "vs_best", "vs_best_low", "vs_best_high",
                   "p_vs_best", "p_holm_vs_best", "test", "rank"]
TEXT_COLUMNS = ("ci_method", "mark", "best_model", "test")
BEST, TIED = "best", "tied"
COLUMN = ["task", "family", "setting", "classifier"]


def with_verdicts(summary: pd.DataFrame, frame: pd.DataFrame, records: list[dict], group: list[str]) -> pd.DataFrame:
    """`summary` with VERDICT_COLUMNS added (blank for published rows and cells without an interval); `group`: the
    columns that make a summary row of the records `frame` (`leaderboard.GROUP`)."""
    out = summary.reindex(columns=list(summary.columns) + [c for c in VERDICT_COLUMNS if c not in summary])
    for c in TEXT_COLUMNS:
        out[c] = pd.Series(None, index=out.index, dtype=object)
    if out.empty or frame.empty:
        return out
    by_path = {r["path"]: r for r in records}
    group_records = {cell_key(key): [by_path[p] for p in g["path"]] for key, g in frame.groupby(group, dropna=False)}
    ours = out.index[out["source"] == "ours"]
    cells = {i: group_records[cell_key(row)] for i, row in zip(ours, out.loc[ours, group].itertuples(index=False))}
    intervals = [cell_interval(cells[i]) for i in ours]
    out.loc[ours, "ci_low"] = [interval.low for interval in intervals]
    out.loc[ours, "ci_high"] = [interval.high for interval in intervals]
    out.loc[ours, "ci_method"] = [interval.method for interval in intervals]
    for (task, family), table in out.loc[ours].groupby(["task", "family"]):
        if family == LABEL_FREE:  # label-free scores: no labelled subsets to pair, and higher is not always better
            continue
        _column_verdicts(out, table, [cells[i] for i in table.index])
    return out


def cell_key(values) -> tuple:
    """A summary row's group as a dictionary key (a missing value, e.g. a record without `method`, is NaN, and NaN
    is not equal to itself)."""
    return tuple("" if pd.isna(v) else v for v in values)


def _column_verdicts(out: pd.DataFrame, table: pd.DataFrame, cells: list) -> None:
    """Marks, comparisons with the best and ranks of the cells of one task's table (`cells`: the records of each
    row of `table`; Holm across the table)."""
    records_of = dict(zip(table.index, cells))
    compared = []  # (row index, p)
    columns = list(table.groupby(["setting", "classifier"]))
    for _, column in columns:
        if len(column) < 2:  # nothing to compare with
            continue
        best = column["mean"].idxmax()
        out.loc[best, "mark"] = BEST
        for i in column.index.drop(best):  # every other cell against the best, paired by seed and image
            try:
                c = compare_cell(records_of[i], records_of[best])
            except BadInputError:  # not paired (other labelled subsets): no verdict for this cell
                continue
            out.loc[i, ["best_model", "vs_best", "vs_best_low", "vs_best_high", "p_vs_best", "test"]] = [
                _model_name(out.loc[best]), c.difference, c.ci_low, c.ci_high, c.p_value, c.method]
            compared.append((i, c.p_value))
    if compared:
        for (i, _), p in zip(compared, holm([p for _, p in compared])):
            out.loc[i, "p_holm_vs_best"] = p
            if p >= 1 - CONFIDENCE:
                out.loc[i, "mark"] = TIED
    for _, column in columns:
        if len(column) < 2:
            continue
        top = out.loc[column.index, "mark"].isin([BEST, TIED])
        others = column["mean"][~top]
        out.loc[column.index[top], "rank"] = 1
        if len(others):
            out.loc[others.index, "rank"] = top.sum() + others.rank(ascending=False, method="min")


def _model_name(row) -> str:
    variant = row.get("variant")
    return f"{row['model']} [{variant}]" if isinstance(variant, str) and variant else str(row["model"])


def _shown(value, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and np.isfinite(value) else "–"


def verdict_lines(verdict: dict) -> list[str]:
    """What the report shows of a clicked cell: its interval, and its comparison with the best of its column."""
    lines = []
    if "ci_low" in verdict:
        lines.append(f"95 % interval: [{verdict['ci_low']:.2f}, {verdict['ci_high']:.2f}] ({verdict['ci_method']})")
    if verdict.get("mark") == BEST:
        lines.append("the best cell of its column (▲)")
    elif "vs_best" in verdict:  # a field without a value (no interval: e.g. one seed, no evidence) reads "–"
        low, high, p, holm_p = (_shown(verdict.get(k), digits) for k, digits in (
            ("vs_best_low", 2), ("vs_best_high", 2), ("p_vs_best", 4), ("p_holm_vs_best", 4)))
        lines.append(f"against the column's best, {verdict.get('best_model', '–')}: difference "
                     f"{verdict['vs_best']:+.2f}, 95 % interval [{low}, {high}], p = {p}, Holm-corrected over the "
                     f"table p = {holm_p}: "
                     + ("not significantly different (≈)" if verdict.get("mark") == TIED
                        else "no p-value" if holm_p == "–" else "significantly lower")
                     + f" ({verdict.get('test', '–')})")
    if "rank" in verdict:
        lines.append(f"rank in its column: {int(verdict['rank'])}")
    return lines


def mean_ranks(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per model (and variant): its mean rank over the columns it was ranked in, and how many."""
    if "rank" not in summary:
        return pd.DataFrame(columns=["model", "variant", "mean_rank", "columns"])
    ranked = summary[pd.to_numeric(summary["rank"], errors="coerce").notna()]
    out = (ranked.assign(rank=ranked["rank"].astype(float)).groupby(["model", "variant"], dropna=False)["rank"]
           .agg(mean_rank="mean", columns="count").reset_index())
    return out.sort_values(["mean_rank", "model"], kind="stable").reset_index(drop=True)


def cell_suffix(mark) -> str:
    """What a table cell shows after its number: ▲ the best of its column, ≈ not significantly different from it."""
    return {BEST: " ▲", TIED: " ≈"}.get(mark if isinstance(mark, str) else "", "")


def interval_text(low, high, digits: int = 1) -> str:
    return "" if low is None or high is None or np.isnan(low) or np.isnan(high) else \
        f" [{low:.{digits}f}, {high:.{digits}f}]"


def ranks_markdown(summary: pd.DataFrame) -> str:
    """The mean-rank section of leaderboard.md."""
    ranks = mean_ranks(summary)
    if ranks.empty:
        return ""
    lines = ["", "## Mean rank", "",
             "Rank in each column (task, setting, classifier) with at least two models: the best cell and the cells "
             "not significantly different from it share rank 1, the others follow by their mean; the mean over the "
             "columns a model was ranked in.", "", "| model | mean rank | columns |", "|---|---|---|"]
    for _, r in ranks.iterrows():
        model = f"{r['model']} [{r['variant']}]" if isinstance(r["variant"], str) and r["variant"] else r["model"]
        lines.append(f"| {markdown_text(model)} | {r['mean_rank']:.2f} | {int(r['columns'])} |")
    return "\n".join(lines + [""])
