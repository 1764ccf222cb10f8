"""The figures' common style: colours, markers, line styles, the error bars (± std over seeds, or each cell's 95 %
interval), the caption, the chance line, single-seed markers, and saving. Figures are `matplotlib.figure.Figure`
objects drawn with the object-oriented API on their own Agg canvas (`new_figure`): no pyplot state and no backend
switch, so importing or calling this leaves a notebook's backend as it was.
"""
from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lowshot.model_zoo.errors import BadInputError
from lowshot.model_zoo.files import atomic_write

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
LINES = ["-", "--", "-.", ":"]
BANDS = ("std", "ci")  # error bars: ± sample std over seeds, or the cell's 95 % interval (benchmark.statistics)
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"]


def staggered_ticks(ticks: list[tuple[float, str]]) -> list[str]:
    """Tick labels, every other one of a run of close ticks (under 0.08 decades apart) moved one line down."""
    labels, previous, down = [], None, False
    for x, label in ticks:
        down = previous is not None and math.log10(x) - math.log10(previous) < 0.08 and not down
        labels.append("\n" + label if down else label)
        previous = x
    return labels


def chance_note(chance: float | None) -> str:
    return f"Dashed grey line: chance level ({chance:.1f})." if chance is not None else "Chance level: not recorded."


def caption(rows: pd.DataFrame, chance: str, x_rule: str = "x: each setting placed by its labelled images per class.",
            bands: str = "std") -> str:
    """The figure's caption: what the error bars are (± std over how many seeds, or 95 % intervals), single seeds,
    published markers, the chance line (`chance`: its sentence) and how x is placed."""
    published = "kind" in rows and (rows["kind"] == "published").any()
    if check_bands(bands) == "ci":
        parts = [interval_note(rows), "Half-filled markers: one seed; its bar, if any, covers the evaluation images "
                 "only (not another labelled subset).",
                 "Hollow markers: published numbers (no interval)." if published else ""]
    else:
        seeds = sorted({int(n) for n in rows.loc[rows["n_seeds"] > 1, "n_seeds"]})
        over = f"{seeds[0]}" if len(seeds) == 1 else "–".join(map(str, (seeds[0], seeds[-1]))) if seeds else ""
        parts = [f"Error bars: ± sample std over {over} seeds (filled markers)." if seeds else
                 "No point has more than one seed.",
                 "Half-filled markers: one seed, no error bar (no spread measured).",
                 "Hollow markers: published numbers." if published else ""]
    return " ".join(p for p in parts + [chance, x_rule] if p)


def check_bands(bands: str) -> str:
    if bands not in BANDS:
        raise BadInputError(f"bands {bands!r}: the error bars are one of {', '.join(BANDS)}")
    return bands


def _ours(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["kind"] == "ours"] if "kind" in rows else rows


def _interval(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(low, high) of each row's 95 % interval (the summary's ci_low / ci_high; NaN where it has none)."""
    return tuple(pd.to_numeric(rows[c], errors="coerce") if c in rows else pd.Series(np.nan, index=rows.index)
                 for c in ("ci_low", "ci_high"))


def interval_note(rows: pd.DataFrame) -> str:
    """What 95 % interval error bars are (the methods of our points' intervals), and how many of our points have
    none (one seed without per-image evidence: `benchmark.statistics`)."""
    ours = _ours(rows)
    low, high = _interval(ours)
    shown = low.notna() & high.notna()
    methods = sorted(set(ours.loc[shown, "ci_method"].dropna())) if "ci_method" in ours else []
    text = (f"Error bars: 95 % intervals of the cells ({'; '.join(methods) or 'benchmark.statistics'})."
            if shown.any() else "No point has a 95 % interval.")
    missing = int((~shown).sum())
    if missing:
        text += f" {missing} point(s) without a bar: no interval (one seed, no per-image evidence)."
    return text


def error_bars(part: pd.DataFrame, single: pd.Series, bands: str):
    """The `yerr` of `part`'s points (columns mean, std, ci_low, ci_high): ± the sample std where more than one
    seed was run (`bands="std"`), or [mean - low, high - mean] of each point's 95 % interval (`"ci"`); NaN (no bar)
    where there is none."""
    if check_bands(bands) == "std":
        return part["std"].where(~single) if "std" in part else None
    low, high = _interval(part)
    mean = part["mean"].astype(float)
    return np.vstack([(mean - low).clip(lower=0).to_numpy(), (high - mean).clip(lower=0).to_numpy()])


def chance_level(rows: pd.DataFrame) -> float | None:
    """The chance level the records of `rows` carry (their mean; one task's records share one), None if unrecorded."""
    chances = pd.to_numeric(rows.get("chance", pd.Series(dtype=float)), errors="coerce").dropna()
    return float(chances.mean()) if len(chances) else None


def marker_key(ax, size: float = 6, published: bool = False, bands: str = "std") -> list:
    """Legend entries of the marker conventions: filled = mean ± std over seeds (or its 95 % interval), half-filled
    = one seed, hollow = published (when `published`)."""
    key = dict(color="0.35", linestyle="none", marker="o", markersize=size, markeredgewidth=1.3)
    ci = check_bands(bands) == "ci"
    return [ax.plot([], [], markerfacecolor="0.35", label="mean, 95 % interval" if ci else "mean ± std over seeds",
                    **key)[0],
            ax.plot([], [], fillstyle="left", markerfacecolor="0.35", markerfacecoloralt="white",
                    label="one seed (interval: images only)" if ci else "one seed (no error bar)", **key)[0]] + (
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


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs):
    """(figure, axes) on an Agg canvas of its own (`Figure.subplots` arguments: figsize, dpi, squeeze, ...)."""
    figure_kwargs = {k: kwargs.pop(k) for k in ("figsize", "dpi") if k in kwargs}
    fig = Figure(**figure_kwargs)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig, out_stem: str | Path, stamp: str | None = None) -> list[Path]:
    """`<out_stem>.png` and `.pdf` of `fig` (each written atomically); `stamp` (`save_drawn`) goes into both files'
    metadata."""
    out_stem = Path(out_stem)
    # No creation date in the PDF: the same records give the same bytes.
    metadata = {"png": {} if stamp is None else {_STAMP_KEY: stamp},
                "pdf": {"CreationDate": None, **({} if stamp is None else {"Keywords": f"{_STAMP_KEY} {stamp}"})}}
    paths = [atomic_write(out_stem.with_suffix(f".{ext}"), lambda tmp: fig.savefig(tmp, metadata=metadata[ext]),
                          suffix=f".tmp.{ext}") for ext in ("png", "pdf")]
    return paths


_STAMP_KEY = "lowshot-inputs"


def save_drawn(draw: Callable[[], Figure], out_stem: str | Path, *inputs) -> list[Path]:
    """`save_figure(draw(), out_stem)`, unless `<out_stem>.png` and `.pdf` were both drawn from the same `inputs`
    (data frames and arguments) by the same code and matplotlib: then nothing is drawn or written, so a rerun that
    changes no record redraws no figure. The stamp that says so is in each file's metadata."""
    out_stem = Path(out_stem)
    stamp = _stamp(inputs)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".pdf")]
    marks = (f"{_STAMP_KEY}\0{stamp}", f"{_STAMP_KEY} {stamp}")  # a PNG tEXt chunk; the PDF's Info dictionary
    if all(p.is_file() and mark.encode() in p.read_bytes() for p, mark in zip(paths, marks)):
        return paths
    return save_figure(draw(), out_stem, stamp)


def _stamp(inputs) -> str:
    digest = hashlib.sha256(_drawing_code().encode())
    for item in inputs:
        text = item.to_csv() if isinstance(item, pd.DataFrame) else repr(item)
        digest.update(f"{len(text)}:{text}".encode())
    return digest.hexdigest()


@functools.cache
def _drawing_code() -> str:
    """The digest of what draws a figure besides its inputs: the package's sources and matplotlib's version."""
    import lowshot.benchmark
    import lowshot.model_zoo
    import lowshot.tasks

    digest = hashlib.sha256(matplotlib.__version__.encode())
    for package in (lowshot.benchmark, lowshot.tasks, lowshot.model_zoo):
        root = Path(package.__file__).parent
        for source in sorted(root.rglob("*.py")):
            digest.update(f"{source.relative_to(root)}\0".encode() + source.read_bytes())
    return digest.hexdigest()
