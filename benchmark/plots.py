"""Figures from the summary table: the paper's Figure 1 and one plot per task.

Figure 1: top-1 vs labels per class (1, 2, 5 images, 1 %) per method; our runs as filled markers with
error bars (± sample std over seeds), a single-seed point half-filled and without error bar, published
reference numbers as hollow markers of the same shape, the chance level as a dashed grey line; a caption under
the plot says so. Marker shape and line style differ per model, so the figure reads in grayscale. Settings are
placed by their labelled images per class (`benchmark.positions`), with the tick labels and axis labels their
task declares (`tasks.registry`); a setting a task does not declare is named on stderr and left out, never
dropped silently.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from lowshot.model_zoo.errors import BadInputError, UnknownNameError
from lowshot.tasks.registry import declaration

from .figure_style import (COLOURS, LINES, MARKERS, caption, chance_level, chance_line, chance_note, marker_key,
                           new_figure, save_figure, single_seed_markers, staggered_ticks)
from .positions import setting_positions
from .transfer_report import FAMILY as TRANSFER, transfer_figure

def draw_task(summary: pd.DataFrame, task: str, classifier: str | None = None, title: str | None = None,
              bands: str = "std"):
    """The matplotlib figure of `task`'s results (main score vs its settings, placed by their labelled images per
    class, `benchmark.positions`); `bands="ci"` draws each curve's 95 % intervals (`benchmark.verdicts`) as a
    shaded band instead of ± std bars. Raises BadInputError when there is nothing to plot."""
    entry = declaration(task)
    if entry is None:
        raise UnknownNameError(f"task {task!r} is not a registered task: its settings have no declared axis")
    protocol, settings = entry.protocol, entry.declared_settings
    labels = {s.name: s.label for s in settings}
    rows = summary[(summary["task"] == task) & (summary["family"] == entry.family)]  # not its label-free scores
    if classifier:
        rows = rows[rows["classifier"] == classifier]
    undeclared = sorted(set(rows["setting"]) - set(labels))
    if undeclared:
        print(f"{task}: setting(s) {undeclared} are not declared by the task and are left out of the figure",
              file=sys.stderr)
    rows = rows[rows["setting"].isin(list(labels))]
    if rows.empty:
        raise BadInputError(f"no {entry.family} results for task {task!r}"
                            + (f" and classifier {classifier}" if classifier else ""))
    xs = setting_positions(rows, task)
    # one curve per model (and variant); of two configurations of one point, the most recent (as the leaderboard)
    curve = rows["model"] + rows["variant"].fillna("").map(lambda v: f" [{v}]" if v else "")
    kind = rows["source"].map(lambda v: "published" if v.startswith("published") else "ours")
    rows = rows.assign(curve=curve, kind=kind).sort_values("finished", kind="stable").drop_duplicates(
        ["curve", "kind", "setting", "classifier"], keep="last")
    chance = chance_level(rows)
    fig, ax = new_figure(figsize=(8.0, 4.9), dpi=150)
    handles = []
    for i, model in enumerate(sorted(set(rows["curve"]))):
        style = dict(marker=MARKERS[i % len(MARKERS)], color=COLOURS[i % len(COLOURS)], markersize=7,
                     markeredgewidth=1.5)
        for source in ("ours", "published"):
            part = rows[(rows["curve"] == model) & (rows["kind"] == source)]
            if part.empty:
                continue
            part = part.assign(x=part["setting"].map(xs)).sort_values("x")
            single = part["n_seeds"] <= 1
            line = LINES[i % len(LINES)] if source == "ours" else "none"
            face = style["color"] if source == "ours" else "white"
            as_band = bands == "ci" and source == "ours"
            if as_band:
                ci_band(ax, part, style["color"])
            bars = ax.errorbar(part["x"], part["mean"], yerr=None if as_band else part["std"].where(~single),
                               capsize=3, linestyle=line,
                               linewidth=1.4, markerfacecolor=face, label=model if source == "ours" else None,
                               markevery=list(~single) if source == "ours" else None, **style)
            if source == "ours":
                handles.append(bars)
                single_seed_markers(ax, part, single, style)
            elif source == "published" and not any(h.get_label() == f"{model} (published)" for h in handles):
                handles.append(ax.plot([], [], linestyle="none", markerfacecolor="white",
                                       label=f"{model} (published)", **style)[0])
    if chance is not None:
        handles.append(chance_line(ax, chance, f"chance ({chance:.1f})"))
    handles += marker_key(ax, published=(rows["kind"] == "published").any())
    ticks = sorted((x, labels[s]) for s, x in xs.items() if s in labels and not math.isnan(x))
    ax.set_xscale("log")
    ax.set_xticks([x for x, _ in ticks], staggered_ticks(ticks))
    ax.minorticks_off()
    ax.set_xlabel(f"{protocol.axis_label} (log scale)", fontsize=9)
    ax.set_ylabel(protocol.metric_label)
    ax.set_title(title or f"{task}: {protocol.metric_label.split(' (')[0]} vs labels")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    text = caption(rows, chance_note(chance)) if bands != "ci" else (
        "Shaded bands: 95 % intervals of the cells (t over seeds widened by an image bootstrap; one seed: images "
        "only). " + chance_note(chance))
    fig.text(0.01, 0.01, text, fontsize=7.5, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def ci_band(ax, part: pd.DataFrame, colour) -> None:
    """The 95 % intervals of one curve's points as a shaded band (points without an interval are left out)."""
    if "ci_low" not in part:
        return
    low, high = (pd.to_numeric(part[c], errors="coerce") for c in ("ci_low", "ci_high"))
    shown = low.notna() & high.notna()
    ax.fill_between(part["x"][shown], low[shown], high[shown], color=colour, alpha=0.15, linewidth=0)


def plot_task(summary: pd.DataFrame, task: str, out_stem: str | Path, classifier: str | None = None,
              title: str | None = None, bands: str = "std") -> list[Path]:
    """Write `<out_stem>.png` and `.pdf` of `task`'s results; returns their paths."""
    return save_figure(draw_task(summary, task, classifier, title, bands), out_stem)


def figure1(summary: pd.DataFrame, out_dir: str | Path, task: str | None = None, bands: str = "std") -> list[Path]:
    """Figure 1 of the paper for `task` (default: imagenet-lowshot when it has results, else embedded)."""
    tasks = set(summary.loc[summary["source"] == "ours", "task"])
    task = task or ("imagenet-lowshot" if "imagenet-lowshot" in tasks else "embedded-lowshot")
    return plot_task(summary, task, Path(out_dir) / f"figure1_{task}", classifier="logreg",
                     title=f"Figure 1 ({task}): logistic regression on frozen features", bands=bands)


def family_plots(summary: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """One figure per (family, task) that has results of ours; the transfer family's tasks share one figure
    (`benchmark.transfer_report`); label-free scores are in the tables only."""
    paths = transfer_figure(summary, out_dir)
    ours = summary[(summary["source"] == "ours") & ~summary["family"].isin([TRANSFER, "label-free"])]
    for (family, task), rows in ours.groupby(["family", "task"]):
        if declaration(task) is None:
            print(f"{task}: not a registered task, no figure (its records are in the tables)", file=sys.stderr)
        elif family == "classification" and "logreg" in set(rows["classifier"]):
            paths += figure1(summary, out_dir, task)
        elif family == "classification":  # e.g. a k-NN-only run: one figure per classifier it has
            for classifier in sorted(set(rows["classifier"])):
                paths += plot_task(summary, task, Path(out_dir) / f"{family}_{task}_{classifier}", classifier=classifier)
        else:
            paths += plot_task(summary, task, Path(out_dir) / f"{family}_{task}")
    return paths
