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

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from model_zoo.errors import BadInputError, UnknownNameError  # noqa: E402
from model_zoo.files import atomic_write  # noqa: E402
from tasks.registry import declaration  # noqa: E402

from .positions import setting_positions  # noqa: E402

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
LINES = ["-", "--", "-.", ":"]
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"]


def _staggered(ticks: list[tuple[float, str]]) -> list[str]:
    """Tick labels, every other one of a run of close ticks (under 0.08 decades apart) moved one line down."""
    labels, previous, down = [], None, False
    for x, label in ticks:
        down = previous is not None and math.log10(x) - math.log10(previous) < 0.08 and not down
        labels.append("\n" + label if down else label)
        previous = x
    return labels


def chance_note(chance: float | None) -> str:
    return f"Dashed grey line: chance level ({chance:.1f})." if chance is not None else "Chance level: not recorded."


def caption(rows: pd.DataFrame, chance: str, x_rule: str = "x: each setting placed by its labelled images per class.") -> str:
    """The figure's caption: what the error bars are (over how many seeds), single seeds, published markers, the
    chance line (`chance`: its sentence) and how x is placed."""
    seeds = sorted({int(n) for n in rows.loc[rows["n_seeds"] > 1, "n_seeds"]})
    over = f"{seeds[0]}" if len(seeds) == 1 else "–".join(map(str, (seeds[0], seeds[-1]))) if seeds else ""
    parts = [f"Error bars: ± sample std over {over} seeds (filled markers)." if seeds else "No point has more than one seed.",
             "Half-filled markers: one seed, no error bar (no spread measured).",
             "Hollow markers: published numbers." if "kind" in rows and (rows["kind"] == "published").any() else "",
             chance, x_rule]
    return " ".join(p for p in parts if p)


def chance_level(rows: pd.DataFrame) -> float | None:
    """The chance level the records of `rows` carry (their mean; one task's records share one), None if unrecorded."""
    chances = pd.to_numeric(rows.get("chance", pd.Series(dtype=float)), errors="coerce").dropna()
    return float(chances.mean()) if len(chances) else None


def marker_key(ax, size: float = 6, published: bool = False) -> list:
    """Legend entries of the marker conventions: filled = mean ± std over seeds, half-filled = one seed, hollow =
    published (when `published`)."""
    key = dict(color="0.35", linestyle="none", marker="o", markersize=size, markeredgewidth=1.3)
    return [ax.plot([], [], markerfacecolor="0.35", label="mean ± std over seeds", **key)[0],
            ax.plot([], [], fillstyle="left", markerfacecolor="0.35", markerfacecoloralt="white",
                    label="one seed (no error bar)", **key)[0]] + (
        [ax.plot([], [], markerfacecolor="white", label="published", **key)[0]] if published else [])


def single_seed_markers(ax, part: pd.DataFrame, single: pd.Series, style: dict) -> None:
    """Half-filled markers over the points of `part` (columns x, mean) that have one seed, so that a point without
    an error bar never reads as a zero spread."""
    if single.any():
        ax.plot(part["x"][single], part["mean"][single], linestyle="none", fillstyle="left",
                markerfacecolor=style["color"], markerfacecoloralt="white", **style)


def chance_line(ax, chance: float, label: str, linewidth: float = 1.2):
    """The chance level as a dashed grey horizontal line."""
    return ax.axhline(chance, color="0.45", linestyle=(0, (4, 3)), linewidth=linewidth, label=label)


def draw_task(summary: pd.DataFrame, task: str, classifier: str | None = None, title: str | None = None):
    """The matplotlib figure of `task`'s results (main score vs its settings, placed by their labelled images per
    class, `benchmark.positions`). Raises BadInputError when there is nothing to plot."""
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
    fig, ax = plt.subplots(figsize=(8.0, 4.9), dpi=150)
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
            bars = ax.errorbar(part["x"], part["mean"], yerr=part["std"].where(~single), capsize=3, linestyle=line,
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
    ax.set_xticks([x for x, _ in ticks], _staggered(ticks))
    ax.minorticks_off()
    ax.set_xlabel(f"{protocol.axis_label} (log scale)", fontsize=9)
    ax.set_ylabel(protocol.metric_label)
    ax.set_title(title or f"{task}: {protocol.metric_label.split(' (')[0]} vs labels")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.text(0.01, 0.01, caption(rows, chance_note(chance)), fontsize=7.5, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_task(summary: pd.DataFrame, task: str, out_stem: str | Path, classifier: str | None = None,
              title: str | None = None) -> list[Path]:
    """Write `<out_stem>.png` and `.pdf` of `task`'s results; returns their paths."""
    return save_figure(draw_task(summary, task, classifier, title), out_stem)


def save_figure(fig, out_stem: str | Path) -> list[Path]:
    """`<out_stem>.png` and `.pdf` of `fig` (each written atomically), then the figure is closed."""
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
