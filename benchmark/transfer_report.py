"""The transfer family's own outputs: the mean over datasets at each k, and the figure of accuracy vs shots.

- `transfer_mean`: per model (and variant), classifier and setting, the mean over the transfer datasets of each
  dataset's main score (itself the mean over seeds), with the number and names of the datasets it covers: a mean
  over 5 datasets is never shown as if it were one over 13. The embedded texture task is another domain: never
  part of the mean.
- `transfer_mean.csv` / `transfer_mean.md` (`write_transfer_tables`).
- `transfer_figure`: one panel per transfer task with results (the main score vs k, declared ticks) and one for
  the mean; logistic regression solid, k-NN dashed, one colour and marker per model.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lowshot.model_zoo.files import atomic_write_text
from lowshot.tasks.registry import TASK_GROUPS, declaration
from lowshot.tasks.transfer import TRANSFER_SETTINGS

from .escaping import csv_text, figure_text, markdown_text
from .figure_style import (COLOURS, MARKERS, caption, chance_level, chance_line, check_bands, error_bars, marker_key,
                           new_figure, save_drawn, single_seed_markers)

FAMILY = "transfer"
MEAN_COLUMNS = ["model", "variant", "method", "classifier", "setting", "mean", "n_datasets", "datasets"]
CLASSIFIER_LINES = {"logreg": "-", "knn": "--"}


def _curve(rows: pd.DataFrame) -> pd.Series:
    return rows["model"] + rows["variant"].fillna("").map(lambda v: f" [{v}]" if v else "")


def transfer_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Our transfer results, of declared settings, one per (model, variant, task, setting, classifier): of two
    configurations of one cell the most recent, as in the leaderboard."""
    names = {s.name for s in TRANSFER_SETTINGS}
    rows = summary[(summary["family"] == FAMILY) & (summary["source"] == "ours") & summary["setting"].isin(names)]
    return rows.sort_values("finished", kind="stable").drop_duplicates(
        ["model", "variant", "task", "setting", "classifier"], keep="last")


def transfer_mean(summary: pd.DataFrame) -> pd.DataFrame:
    rows = transfer_rows(summary)
    rows = rows[rows["task"].isin(TASK_GROUPS["transfer"])]
    if rows.empty:
        return pd.DataFrame(columns=MEAN_COLUMNS)
    order = {s.name: i for i, s in enumerate(TRANSFER_SETTINGS)}
    out = rows.groupby(["model", "variant", "method", "classifier", "setting"], dropna=False).agg(
        mean=("mean", "mean"), n_datasets=("task", "nunique"),
        datasets=("task", lambda t: " ".join(sorted(x.removeprefix("transfer-") for x in t)))).reset_index()
    return out.assign(_o=out["setting"].map(order)).sort_values(["model", "variant", "classifier", "_o"]).drop(
        columns="_o")[MEAN_COLUMNS]


def mean_markdown(mean: pd.DataFrame) -> str:
    settings = [s.name for s in TRANSFER_SETTINGS]
    total = len(TASK_GROUPS["transfer"])
    lines = ["| model | classifier | " + " | ".join(settings) + " | datasets |", "|" + "---|" * (len(settings) + 3)]
    for (model, variant, classifier), rows in mean.groupby(["model", "variant", "classifier"], dropna=False,
                                                           sort=False):
        by = rows.set_index("setting")
        cells = [f"{by.loc[s, 'mean']:.1f} ({by.loc[s, 'n_datasets']}/{total})" if s in by.index else "–"
                 for s in settings]
        covered = sorted(set(" ".join(rows["datasets"]).split()))
        name = f"{model} [{variant}]" if isinstance(variant, str) and variant else model
        lines.append(f"| {markdown_text(name)} | {markdown_text(classifier)} | " + " | ".join(cells)
                     + f" | {markdown_text(', '.join(covered))} |")
    return ("Mean over transfer datasets of each dataset's main score (top-1 or mean per-class accuracy, %); in "
            "brackets the number of datasets the mean covers.\n\n" + "\n".join(lines) + "\n")


def write_transfer_tables(summary: pd.DataFrame, out_dir) -> dict[str, Path]:
    """transfer_mean.csv and .md in `out_dir` when the records have transfer results of real datasets."""
    mean = transfer_mean(summary)
    if mean.empty:
        return {}
    out_dir = Path(out_dir)
    paths = {"transfer_mean": out_dir / "transfer_mean.csv", "transfer_mean_md": out_dir / "transfer_mean.md"}
    atomic_write_text(paths["transfer_mean"], csv_text(mean, float_format="%.3f"))
    atomic_write_text(paths["transfer_mean_md"], mean_markdown(mean))
    return paths


def _panel(ax, rows: pd.DataFrame, curves: list[str], title: str, ylabel: str, bands: str = "std") -> None:
    """One panel: the main score vs k per (model, classifier). Rows with seeds (a task's) get error bars of ± their
    std (or their 95 % interval, `bands="ci"`) and half-filled markers where one seed was run, and the task's chance
    level; the mean panel has neither."""
    xs = {s.name: s.x for s in TRANSFER_SETTINGS}
    for (curve, classifier), part in rows.groupby(["curve", "classifier"]):
        i = curves.index(curve)
        part = part.assign(x=part["setting"].map(xs)).sort_values("x")
        style = dict(marker=MARKERS[i % len(MARKERS)], color=COLOURS[i % len(COLOURS)], markersize=4,
                     markeredgewidth=1.0)
        single = part["n_seeds"] <= 1 if "n_seeds" in part else pd.Series(False, index=part.index)
        bars = error_bars(part, single, bands) if "n_seeds" in part else None
        ax.errorbar(part["x"], part["mean"], yerr=bars, capsize=2, elinewidth=0.8,
                    linestyle=CLASSIFIER_LINES.get(classifier, ":"), linewidth=1.2, markevery=list(~single),
                    label=figure_text(f"{curve} {classifier}"), **style)
        single_seed_markers(ax, part, single, style)
    chance = chance_level(rows)
    if chance is not None:
        chance_line(ax, chance, "chance level", linewidth=1.0)
    ax.set_xscale("log")
    ax.set_xticks([s.x for s in TRANSFER_SETTINGS], [s.label for s in TRANSFER_SETTINGS])
    ax.minorticks_off()
    ax.set_title(title + (f" (chance {chance:.1f})" if chance is not None else ""), fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_xlabel("labelled images per class (k)", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)


def transfer_figure(summary: pd.DataFrame, out_dir, bands: str = "std") -> list[Path]:
    """`transfer.png` / `.pdf` in `out_dir` (`draw_transfer`); [] without transfer results."""
    if transfer_rows(summary).empty:
        return []
    return save_drawn(lambda: draw_transfer(summary, bands), Path(out_dir) / "transfer", summary, bands)


def draw_transfer(summary: pd.DataFrame, bands: str = "std"):
    """The matplotlib figure: a panel per transfer task with results and one for the mean over the real datasets
    (when any), a legend and a caption under them; `bands`: ± std bars or 95 % intervals (`plots.draw_task`)."""
    check_bands(bands)
    rows = transfer_rows(summary)
    rows = rows.assign(curve=_curve(rows))
    mean = transfer_mean(summary)
    mean = mean.assign(curve=_curve(mean))
    curves = sorted(set(rows["curve"]))
    tasks = [t for t in TASK_GROUPS["transfer"] + sorted(set(rows["task"])) if t in set(rows["task"])]
    tasks = list(dict.fromkeys(tasks))
    panels = len(tasks) + (not mean.empty)
    cols = min(4, panels)
    nrows = math.ceil(panels / cols)
    ncol = 2 * cols  # legend entries per line: two per panel width
    bottom = 0.1 + 0.2 * math.ceil((2 * len(curves) + 3) / ncol)  # inches below the panels: the legend
    caption_inches = 0.45  # and under it the caption
    height = 2.6 * nrows + bottom + caption_inches
    fig, axes = new_figure(nrows, cols, figsize=(max(4.4, 3.2 * cols), height), dpi=130, squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        protocol = declaration(task).protocol
        _panel(ax, rows[rows["task"] == task], curves, task.removeprefix("transfer-"), protocol.metric_label, bands)
    if not mean.empty:
        ax = axes.flat[len(tasks)]
        counts = sorted(set(mean["n_datasets"]))
        _panel(ax, mean, curves, f"mean over {'/'.join(map(str, counts))} dataset(s)", "mean main score (%)")
        ax.set_facecolor("#f4f4f4")
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    legend = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    legend.update({h.get_label(): h for h in marker_key(axes.flat[0], size=4, bands=bands)})
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, loc="lower center", ncol=min(ncol, len(labels)), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, caption_inches / height))
    chance = ("Dashed grey line: the chance level of the panel's task (a uniform random guess, "
              "100 / classes)." if rows["chance"].notna().any() else "Chance level: not recorded.")
    mean_rule = " The mean panel: the mean over datasets of each dataset's mean, no error bars." if not mean.empty else ""
    fig.text(0.01, 0.01, caption(rows, chance, "x: k labelled images per class; full: every training image."
                                 + mean_rule, bands), fontsize=6.5, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, (bottom + caption_inches) / height, 1, 1))
    return fig
