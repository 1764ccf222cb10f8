"""Figures from the summary table: the paper's Figure 1 and one plot per task.

Figure 1: top-1 vs labels per class (1, 2, 5 images, 1 %) per method; our runs as filled markers with
error bars over seeds, published reference numbers as hollow markers of the same shape. Marker shape and
line style differ per model, so the figure reads in grayscale. Every axis comes from the task's declaration
(`tasks.registry`): the settings' x positions and tick labels, the axis labels; a setting a task does not
declare is named on stderr and left out, never dropped silently.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from model_zoo.errors import BadInputError, UnknownNameError  # noqa: E402
from model_zoo.files import atomic_write  # noqa: E402
from tasks.registry import declaration  # noqa: E402

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
LINES = ["-", "--", "-.", ":"]
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"]


def draw_task(summary: pd.DataFrame, task: str, classifier: str | None = None, title: str | None = None):
    """The matplotlib figure of `task`'s results (main score vs its declared settings). Raises ValueError when
    there is nothing to plot."""
    entry = declaration(task)
    if entry is None:
        raise UnknownNameError(f"task {task!r} is not a registered task: its settings have no declared axis")
    protocol, settings = entry.protocol, entry.declared_settings
    xs = {s.name: s.x for s in settings}
    rows = summary[(summary["task"] == task) & (summary["family"] == entry.family)]  # not its label-free scores
    if classifier:
        rows = rows[rows["classifier"] == classifier]
    undeclared = sorted(set(rows["setting"]) - set(xs))
    if undeclared:
        print(f"{task}: setting(s) {undeclared} are not declared by the task and are left out of the figure",
              file=sys.stderr)
    rows = rows[rows["setting"].isin(list(xs))]
    if rows.empty:
        raise BadInputError(f"no {entry.family} results for task {task!r}"
                            + (f" and classifier {classifier}" if classifier else ""))
    # one curve per model (and variant); of two configurations of one point, the most recent (as the leaderboard)
    curve = rows["model"] + rows["variant"].fillna("").map(lambda v: f" [{v}]" if v else "")
    kind = rows["source"].map(lambda v: "published" if v.startswith("published") else "ours")
    rows = rows.assign(curve=curve, kind=kind).sort_values("finished", kind="stable").drop_duplicates(
        ["curve", "kind", "setting", "classifier"], keep="last")
    fig, ax = plt.subplots(figsize=(8.0, 4.4), dpi=150)
    models = sorted(set(rows["curve"]))
    for i, model in enumerate(models):
        style = dict(marker=MARKERS[i % len(MARKERS)], color=COLOURS[i % len(COLOURS)])
        for source, filled in (("ours", True), ("published", False)):
            part = rows[(rows["curve"] == model) & (rows["kind"] == source)]
            if part.empty:
                continue
            part = part.assign(x=part["setting"].map(xs)).sort_values("x")
            label = model if filled else f"{model} (published)"
            ax.errorbar(part["x"], part["mean"], yerr=part["std"].fillna(0), capsize=3, markersize=7,
                        linestyle=LINES[i % len(LINES)] if filled else "none", linewidth=1.4,
                        markerfacecolor=style["color"] if filled else "white", markeredgewidth=1.5,
                        label=label, **style)
    ax.set_xscale("log")
    ax.set_xticks([s.x for s in settings], [s.label for s in settings])
    ax.minorticks_off()
    ax.set_xlabel(protocol.axis_label)
    ax.set_ylabel(protocol.metric_label)
    ax.set_title(title or f"{task}: {protocol.metric_label.split(' (')[0]} vs labels")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def plot_task(summary: pd.DataFrame, task: str, out_stem: str | Path, classifier: str | None = None,
              title: str | None = None) -> list[Path]:
    """Write `<out_stem>.png` and `.pdf` of `task`'s results; returns their paths."""
    fig = draw_task(summary, task, classifier, title)
    out_stem = Path(out_stem)
    # No creation date in the PDF: the same records give the same bytes.
    metadata = {"png": None, "pdf": {"CreationDate": None}}
    paths = [atomic_write(out_stem.with_suffix(f".{ext}"), lambda tmp: fig.savefig(tmp, metadata=metadata[ext]),
                          suffix=f".tmp.{ext}") for ext in ("png", "pdf")]
    plt.close(fig)
    return paths


def figure1(summary: pd.DataFrame, out_dir: str | Path, task: str | None = None) -> list[Path]:
    """Figure 1 of the paper for `task` (default: imagenet-lowshot when it has results, else embedded)."""
    tasks = set(summary.loc[summary["source"] == "ours", "task"])
    task = task or ("imagenet-lowshot" if "imagenet-lowshot" in tasks else "embedded-lowshot")
    return plot_task(summary, task, Path(out_dir) / f"figure1_{task}", classifier="logreg",
                     title=f"Figure 1 ({task}): logistic regression on frozen features")


def family_plots(summary: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """One figure per (family, task) that has results of ours; the transfer family's tasks share one figure
    (`benchmark.transfer_report`); label-free scores are in the tables only."""
    from .transfer_report import FAMILY as TRANSFER, transfer_figure

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
