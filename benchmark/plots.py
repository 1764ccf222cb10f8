"""Figures from the summary table: the paper's Figure 1 and one plot per task family.

Figure 1: top-1 vs labels per class (1, 2, 5 images, 1 %) per method; our runs as filled markers with
error bars over seeds, published reference numbers as hollow markers of the same shape. Marker shape and
line style differ per model, so the figure reads in grayscale.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

# x position of each setting. 1 % of ImageNet is 12.8 labelled images per class on average.
X = {
    "classification": {"1img": 1, "2img": 2, "5img": 5, "1percent": 12.8},
    "multilabel": {"1shot": 1, "2shot": 2, "5shot": 5, "1percent": 10, "10percent": 20, "full": 40},
    "segmentation": {"1percent": 1, "5percent": 5, "10percent": 10, "full": 100},
}
TICKS = {
    "classification": (["1", "2", "5", "1 %"], "labelled images per class"),
    "multilabel": (["1", "2", "5", "1 %", "10 %", "100 %"], "labelled images per class (k) / fraction of images"),
    "segmentation": (["1 %", "5 %", "10 %", "100 %"], "fraction of labelled training images"),
}
YLABEL = {"classification": "top-1 accuracy (%)", "multilabel": "mAP (%)", "segmentation": "mIoU (%)"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
LINES = ["-", "--", "-.", ":"]
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"]


def plot_family(summary: pd.DataFrame, family: str, task: str, out_stem: str | Path,
                classifier: str | None = None, title: str | None = None) -> list[Path]:
    """Write `<out_stem>.png` and `.pdf`; returns their paths. Raises ValueError when there is nothing to plot."""
    xs = X[family]
    rows = summary[(summary["task"] == task) & summary["setting"].isin(list(xs))]
    if classifier:
        rows = rows[rows["classifier"] == classifier]
    if rows.empty:
        raise ValueError(f"no {family} results for task {task!r}" + (f" and classifier {classifier}" if classifier else ""))
    fig, ax = plt.subplots(figsize=(8.0, 4.4), dpi=150)
    models = list(dict.fromkeys(rows.sort_values("model")["model"]))
    for i, model in enumerate(models):
        style = dict(marker=MARKERS[i % len(MARKERS)], color=COLOURS[i % len(COLOURS)])
        for source, filled in (("ours", True), ("published", False)):
            part = rows[(rows["model"] == model) & rows["source"].str.startswith(source)]
            if part.empty:
                continue
            part = part.assign(x=part["setting"].map(xs)).sort_values("x")
            label = model if filled else f"{model} (published)"
            ax.errorbar(part["x"], part["mean"], yerr=part["std"].fillna(0), capsize=3, markersize=7,
                        linestyle=LINES[i % len(LINES)] if filled else "none", linewidth=1.4,
                        markerfacecolor=style["color"] if filled else "white", markeredgewidth=1.5,
                        label=label, **style)
    ax.set_xscale("log")
    ax.set_xticks(list(xs.values()), TICKS[family][0])
    ax.minorticks_off()
    ax.set_xlabel(TICKS[family][1])
    ax.set_ylabel(YLABEL[family])
    ax.set_title(title or f"{task}: {YLABEL[family].split(' (')[0]} vs labels")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = out_stem.with_suffix(f".{ext}")
        tmp = path.with_name(f".{path.name}.tmp.{ext}")
        fig.savefig(tmp)
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths


def figure1(summary: pd.DataFrame, out_dir: str | Path, task: str | None = None) -> list[Path]:
    """Figure 1 of the paper for `task` (default: imagenet-lowshot when it has results, else embedded)."""
    tasks = set(summary.loc[summary["source"] == "ours", "task"])
    task = task or ("imagenet-lowshot" if "imagenet-lowshot" in tasks else "embedded-lowshot")
    return plot_family(summary, "classification", task, Path(out_dir) / f"figure1_{task}", classifier="logreg",
                       title=f"Figure 1 ({task}): logistic regression on frozen features")


def family_plots(summary: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """One figure per (family, task) that has results of ours."""
    paths = []
    ours = summary[summary["source"] == "ours"]
    for (family, task), rows in ours.groupby(["family", "task"]):
        if family == "classification" and "logreg" in set(rows["classifier"]):
            paths += figure1(summary, out_dir, task)
        elif family == "classification":  # e.g. a k-NN-only run: one figure per classifier it has
            for classifier in sorted(set(rows["classifier"])):
                paths += plot_family(summary, family, task, Path(out_dir) / f"{family}_{task}_{classifier}",
                                     classifier=classifier)
        else:
            paths += plot_family(summary, family, task, Path(out_dir) / f"{family}_{task}")
    return paths
