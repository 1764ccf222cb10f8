"""Figures from the summary table: the paper's Figure 1 and one plot per task.

Figure 1: top-1 vs labels per class (1, 2, 5 images, 1 %) per method; our runs as filled markers with
error bars (± sample std over seeds, or with `bands="ci"` each cell's 95 % interval from `benchmark.statistics`),
a single-seed point half-filled (without error bar, or with its interval over the images when it has one),
published reference numbers as hollow markers of the same shape, the chance level as a dashed grey line; a caption under
the plot says so. Marker shape and line style differ per model, so the figure reads in grayscale. Settings are
placed by their labelled images per class (`benchmark.positions`), with the tick labels and axis labels their
task declares (`tasks.registry`); a setting a task does not declare is named on stderr and left out, never
dropped silently.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lowshot.model_zoo.errors import BadInputError, UnknownNameError
from lowshot.tasks.registry import declaration

from .figure_style import (COLOURS, LINES, MARKERS, caption, chance_level, chance_line, chance_note, check_bands,
                           error_bars, interval_note, marker_key, new_figure, save_drawn, single_seed_markers,
                           staggered_ticks)
from .escaping import figure_text
from .leaderboard import GROUP
from .positions import setting_positions
from .transfer_report import FAMILY as TRANSFER, transfer_figure
from .verdicts import cell_key

def draw_task(summary: pd.DataFrame, task: str, classifier: str | None = None, title: str | None = None,
              bands: str = "std"):
    """The matplotlib figure of `task`'s results (main score vs its settings, placed by their labelled images per
    class, `benchmark.positions`); `bands="ci"`: each point's error bar is its cell's 95 % interval (the summary's
    ci_low / ci_high, `benchmark.verdicts`) instead of ± std; a point without one is drawn alone. Raises
    BadInputError when there is nothing to plot."""
    check_bands(bands)
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
    curves = sorted(set(rows["curve"]))
    styles = curve_styles(curves)
    for i, model in enumerate(curves):
        style = dict(marker=styles[model]["marker"], color=styles[model]["color"], markersize=7, markeredgewidth=1.5)
        shift = dodge(i, len(curves))
        for source in ("ours", "published"):
            part = rows[(rows["curve"] == model) & (rows["kind"] == source)]
            if part.empty:
                continue
            part = part.assign(x=part["setting"].map(xs) * shift).sort_values("x")
            single = part["n_seeds"] <= 1
            line = styles[model]["line"] if source == "ours" else "none"
            face = style["color"] if source == "ours" else "white"
            bars = ax.errorbar(part["x"], part["mean"], yerr=error_bars(part, single, bands), capsize=3,
                               linestyle=line, linewidth=1.4, markerfacecolor=face,
                               label=figure_text(model) if source == "ours" else None,
                               markevery=list(~single) if source == "ours" else None, **style)
            if source == "ours":
                handles.append(bars)
                single_seed_markers(ax, part, single, style)
            elif source == "published" and not any(h.get_label() == figure_text(f"{model} (published)")
                                                   for h in handles):
                handles.append(ax.plot([], [], linestyle="none", markerfacecolor="white",
                                       label=figure_text(f"{model} (published)"), **style)[0])
    if chance is not None:
        handles.append(chance_line(ax, chance, f"chance ({chance:.1f})"))
    handles += marker_key(ax, published=(rows["kind"] == "published").any(), bands=bands)
    ticks = sorted((x, labels[s]) for s, x in xs.items() if s in labels and not math.isnan(x))
    ax.set_xscale("log")
    ax.set_xticks([x for x, _ in ticks], staggered_ticks(ticks))
    ax.minorticks_off()
    ax.set_xlabel(f"{protocol.axis_label} (log scale)", fontsize=9)
    ax.set_ylabel(protocol.metric_label)
    ax.set_title(title or f"{task}: {protocol.metric_label.split(' (')[0]} vs labels")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.text(0.01, 0.01, caption(rows, chance_note(chance), bands=bands), fontsize=7.5, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


DODGE_SPAN = 0.16  # decades of the log x axis the models of one setting spread over (settings are >= 0.3 apart)


def dodge(i: int, n: int) -> float:
    """The factor that moves model `i` of `n` off its setting's x (log axis), so that no two error bars overlap."""
    if n <= 1:
        return 1.0
    step = min(0.03, DODGE_SPAN / (n - 1))
    return 10 ** ((i - (n - 1) / 2) * step)


def curve_styles(curves: list[str]) -> dict[str, dict]:
    """Marker, colour and line of each curve: the checkpoints of one series (`run@step<N>`) share the run's marker
    and line and take colours of a sequential map by step (light = early); other models combine the palette's
    colours with markers and line styles (distinct up to 40 models)."""
    from matplotlib import colormaps

    from .model_specs import series_of

    runs: dict[str, list] = {}
    for c in curves:
        if (found := series_of(c.split(" [")[0])) is not None:
            runs.setdefault(found[0], []).append((found[1], c))
    styles, other = {}, 0
    for j, (run, members) in enumerate(sorted(runs.items())):
        if len(members) < 2:
            continue
        for k, (_, c) in enumerate(sorted(members)):
            styles[c] = dict(marker=MARKERS[j % len(MARKERS)], line=LINES[j % len(LINES)],
                             color=colormaps["viridis"](0.85 - 0.75 * k / (len(members) - 1)))
    for c in curves:
        if c not in styles:
            styles[c] = dict(marker=MARKERS[other % len(MARKERS)], color=COLOURS[other % len(COLOURS)],
                             line=LINES[(other // len(COLOURS)) % len(LINES)])
            other += 1
    return styles


def plot_task(summary: pd.DataFrame, task: str, out_stem: str | Path, classifier: str | None = None,
              title: str | None = None, bands: str = "std") -> list[Path]:
    """Write `<out_stem>.png` and `.pdf` of `task`'s results; returns their paths."""
    return save_drawn(lambda: draw_task(summary, task, classifier, title, bands), out_stem,
                      summary, task, classifier, title, bands)


def figure1(summary: pd.DataFrame, out_dir: str | Path, task: str | None = None, bands: str = "std") -> list[Path]:
    """Figure 1 of the paper for `task` (default: imagenet-lowshot when it has results, else embedded)."""
    tasks = set(summary.loc[summary["source"] == "ours", "task"])
    task = task or ("imagenet-lowshot" if "imagenet-lowshot" in tasks else "embedded-lowshot")
    return plot_task(summary, task, Path(out_dir) / f"figure1_{task}", classifier="logreg",
                     title=f"Figure 1 ({task}): logistic regression on frozen features", bands=bands)


def family_plots(summary: pd.DataFrame, out_dir: str | Path, bands: str = "std") -> list[Path]:
    """One figure per (family, task) that has results of ours; the transfer family's tasks share one figure
    (`benchmark.transfer_report`); label-free scores are in the tables only. `bands`: as `draw_task`."""
    paths = transfer_figure(summary, out_dir, check_bands(bands))
    ours = summary[(summary["source"] == "ours") & ~summary["family"].isin([TRANSFER, "label-free"])]
    for (family, task), rows in ours.groupby(["family", "task"]):
        if declaration(task) is None:
            print(f"{task}: not a registered task, no figure (its records are in the tables)", file=sys.stderr)
        elif family == "classification" and "logreg" in set(rows["classifier"]):
            paths += figure1(summary, out_dir, task, bands)
        elif family == "classification":  # e.g. a k-NN-only run: one figure per classifier it has
            for classifier in sorted(set(rows["classifier"])):
                paths += plot_task(summary, task, Path(out_dir) / f"{family}_{task}_{classifier}",
                                   classifier=classifier, bands=bands)
        else:
            paths += plot_task(summary, task, Path(out_dir) / f"{family}_{task}", bands=bands)
    return paths


SERIES_POINT = ["task", "setting", "classifier", "run", "training_step"]


def series_figure(frame: pd.DataFrame, out_dir: str | Path, bands: str = "std", summary: pd.DataFrame | None = None,
                  stem: str = "series", title: str | None = None, note: str | None = None) -> list[Path]:
    """Write `<out_dir>/<stem>.png` and `.pdf` of `draw_series`; returns their paths."""
    return save_drawn(lambda: draw_series(frame, bands, summary, title, note), Path(out_dir) / stem,
                      frame, bands, summary, title, note)


def draw_series(frame: pd.DataFrame, bands: str = "std", summary: pd.DataFrame | None = None,
                title: str | None = None, note: str | None = None):
    """Score vs. training step of checkpoint series (records with a `training_step`, `lowshot bench --model
    'GLOB:name=RUN'`): a panel per (task, setting), a line per run and classifier (a run's colour and marker, a
    classifier's line style), the mean over seeds with ± sample std as error bars, or with `bands="ci"` the 95 %
    interval of the point's cell in `summary` (one checkpoint's records of one configuration; none for a point that
    mixes configurations). `note`: the caption under the panels (default: what the points, bars and x are)."""
    check_bands(bands)
    rows = frame[frame["training_step"].notna() & (frame["family"] != "label-free")]
    if rows.empty:
        raise BadInputError("no record has a training step: evaluate a series of checkpoints first "
                            "(lowshot bench --model 'runs/a/ckpt*.pth:name=run-a')")
    rows = rows.assign(run=rows["run"].fillna(rows["model"]), training_step=rows["training_step"].astype(float))
    points = rows.groupby(SERIES_POINT, sort=True)["score"].agg(["mean", "std", "count"]).reset_index()
    if bands == "ci":
        points = points.join(_point_intervals(rows, summary), on=SERIES_POINT)
    panels = list(dict.fromkeys(zip(rows["task"], rows["setting"])))
    columns = min(3, len(panels))
    fig, axes = new_figure(math.ceil(len(panels) / columns), columns, figsize=(4.4 * columns,
                           3.4 * math.ceil(len(panels) / columns)), dpi=150, squeeze=False)
    runs, classifiers = list(dict.fromkeys(rows["run"])), sorted(set(points["classifier"]))
    units = " / ".join(sorted(set(rows["step_unit"].dropna()))) or "step"
    for ax, (task, setting) in zip(axes.flat, panels):
        entry = declaration(task)
        for i, run in enumerate(runs):
            for classifier in classifiers:
                part = points[(points["task"] == task) & (points["setting"] == setting) & (points["run"] == run)
                              & (points["classifier"] == classifier)]
                if part.empty:
                    continue
                ax.errorbar(part["training_step"], part["mean"], yerr=error_bars(part, part["count"] <= 1, bands),
                            capsize=3, marker=MARKERS[i % len(MARKERS)], color=COLOURS[i % len(COLOURS)],
                            linestyle=LINES[classifiers.index(classifier) % len(LINES)], markersize=5,
                            linewidth=1.3, label=f"{run} ({classifier})")
        label = next((s.label for s in entry.declared_settings if s.name == setting), setting) if entry else setting
        ax.set_title(f"{task}, {setting} ({label})", fontsize=9)
        ax.set_xlabel(f"training {units}")
        ax.set_ylabel(entry.protocol.metric_label if entry else "score", fontsize=8)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    legend = {}  # one legend for all panels, beside them: inside a panel it covers its lines
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(text, handle)
    fig.legend(list(legend.values()), list(legend), fontsize=7, frameon=False, loc="center right")
    bars = "Mean over seeds. " + (interval_note(points) if bands == "ci" else
                                  "Error bars: ± sample std (none with one seed).")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.text(0.01, 0.01, note or f"{bars} x: the training step each checkpoint's file (or file name) gives.",
             fontsize=7.5, va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1 - 1.6 / fig.get_figwidth(), 1))
    return fig


def _point_intervals(rows: pd.DataFrame, summary: pd.DataFrame | None) -> pd.DataFrame:
    """ci_low, ci_high, ci_method of each series point (index SERIES_POINT): those of the one summary cell its
    records make (`benchmark.verdicts`, computed by `benchmark.statistics`), NaN when they make several."""
    columns = ["ci_low", "ci_high", "ci_method"]
    if summary is None or summary.empty or "ci_low" not in summary:
        raise BadInputError("the series figure with 95 % intervals needs the summary of the records (load_summary)")
    ours = summary[summary["source"] == "ours"]
    interval = {cell_key(key): values for key, values in zip(ours[GROUP].itertuples(index=False, name=None),
                                                            ours[columns].itertuples(index=False, name=None))}
    cell = pd.Series([cell_key(k) for k in rows[GROUP].itertuples(index=False, name=None)], index=rows.index)
    out = {}
    for point, part in rows.assign(_cell=cell).groupby(SERIES_POINT, sort=True):
        made_of = set(part["_cell"])
        out[point] = interval.get(made_of.pop(), (np.nan,) * 3) if len(made_of) == 1 else (np.nan,) * 3
    return pd.DataFrame(list(out.values()), index=pd.MultiIndex.from_tuples(list(out), names=SERIES_POINT),
                        columns=columns)
