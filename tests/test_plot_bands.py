"""Figures with `--bands ci`: every point's error bar is its cell's 95 % interval (benchmark.statistics, through the
summary's ci_low / ci_high), in Figure 1, the family figures, the series figure and the report; a point without an
interval is drawn alone and the caption says so."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lowshot.benchmark import plots, report
from lowshot.benchmark.cli import main
from lowshot.benchmark.leaderboard import load_summary
from lowshot.benchmark.plots import draw_task
from lowshot.benchmark.report import render
from lowshot.model_zoo.errors import BadInputError

from .test_statistics import _write


def _results(root, classifier="knn"):
    """a and b: three seeds with evidence at 1img and 2img; c: one seed with evidence at 1img (an interval over the
    images only) and one seed without evidence at 2img (no interval)."""
    rng = np.random.default_rng(5)
    target = rng.integers(0, 10, 300)
    for setting, level in (("1img", 0.3), ("2img", 0.45)):
        for seed in (1, 2, 3):
            u = rng.random(300)
            _write(root, "a", seed, u < level + 0.03 * seed, target, setting, classifier)
            _write(root, "b", seed, u < level - 0.1 + 0.05 * seed, target, setting, classifier)
    _write(root, "c", 1, rng.random(300) < 0.2, target, "1img", classifier)
    bare = _write(root, "c", 1, rng.random(300) < 0.25, target, "2img", classifier)
    record = json.loads(bare.read_text())
    record.pop("evidence")
    bare.write_text(json.dumps(record))
    bare.with_name(bare.stem + ".evidence.npz").unlink()
    return load_summary(root, reference=None)


def _bars(ax) -> dict:
    """{legend label: {x: (lower end, upper end) of the point's error bar, or None without a bar}} as drawn."""
    curves = {}
    for container in ax.containers:
        line, _, bar_lines = container.lines
        ends = {}
        for bars in bar_lines:
            for segment in bars.get_segments():
                if len(segment) and np.isfinite(segment).all():
                    ends[float(segment[0][0])] = (float(segment[0][1]), float(segment[1][1]))
        curves[container.get_label()] = {float(x): ends.get(float(x)) for x in line.get_xdata()}
    return curves


def _by_setting(curve: dict, settings=("1img", "2img")) -> dict:
    """The curve's points by setting (x of each model is its setting's labelled images times a dodge factor)."""
    return dict(zip(settings, (curve[x] for x in sorted(curve)))) if len(curve) == len(settings) else \
        {settings[0]: next(iter(curve.values()))}


def _interval(summary, model, setting):
    row = summary[(summary["model"] == model) & (summary["setting"] == setting)].iloc[0]
    return row["ci_low"], row["ci_high"], row["mean"], row["std"]


def test_family_figure_bars_are_the_cells_intervals(tmp_path, monkeypatch, capsys):
    _, summary = _results(tmp_path / "r")
    drawn = []
    monkeypatch.setattr(plots, "save_drawn", lambda draw, stem, *inputs: drawn.append(draw()) or [stem])
    assert main(["plot", "families", str(tmp_path / "r"), "--bands", "ci", "--out", str(tmp_path / "f")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "f" / "classification_embedded-lowshot_knn")]
    (fig,) = drawn
    bars = _bars(fig.axes[0])
    for model in ("a", "b"):
        for setting, ends in _by_setting(bars[model]).items():
            low, high, _, _ = _interval(summary, model, setting)
            assert ends == pytest.approx((low, high), abs=1e-9)
    c = [bars["c"][x] for x in sorted(bars["c"])]
    low, high, _, _ = _interval(summary, "c", "1img")  # one seed with evidence: its interval over the images
    assert c[0] == pytest.approx((low, high), abs=1e-9) and low < high
    assert c[1] is None and np.isnan(_interval(summary, "c", "2img")[0])  # no evidence, one seed: drawn alone
    caption = fig.texts[-1].get_text()
    assert "Error bars: 95 % intervals of the cells" in caption and "seed t + image bootstrap" in caption
    assert "1 point(s) without a bar: no interval (one seed, no per-image evidence)" in caption
    assert "mean, 95 % interval" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_the_std_version_differs(tmp_path):
    _, summary = _results(tmp_path / "r")
    std, ci = (_bars(draw_task(summary, "embedded-lowshot", "knn", bands=b).axes[0]) for b in ("std", "ci"))
    for setting, ends in _by_setting(std["a"]).items():
        low, high, mean, sd = _interval(summary, "a", setting)
        assert ends == pytest.approx((mean - sd, mean + sd))
        assert ends != pytest.approx((low, high), abs=1e-3)
    assert ci["a"] != std["a"]
    assert [std["c"][x] for x in sorted(std["c"])] == [None, None]  # one seed: no std bar


def test_figure1_and_report_with_intervals(tmp_path, monkeypatch):
    root = tmp_path / "r"
    _, summary = _results(root, classifier="logreg")
    drawn = []
    monkeypatch.setattr(plots, "save_drawn", lambda draw, stem, *inputs: drawn.append(draw()) or [stem])
    assert main(["plot", "figure1", str(root), "--task", "embedded-lowshot", "--bands", "ci"]) == 0
    for setting, ends in _by_setting(_bars(drawn[0].axes[0])["b"]).items():
        assert ends == pytest.approx(_interval(summary, "b", setting)[:2], abs=1e-9)
    asked = []
    monkeypatch.setattr(report, "draw_task", lambda *a, bands, **k: asked.append(bands) or draw_task(*a, bands=bands,
                                                                                                      **k))
    assert "95 % intervals (those in the table)" in render(root, bands="ci") and asked == ["ci"]
    assert "error bars are ± sample std" in render(root) and asked == ["ci", "std"]
    with pytest.raises(BadInputError, match="bands 'sem'"):
        draw_task(summary, "embedded-lowshot", "logreg", bands="sem")


def test_series_figure_bars_are_the_checkpoints_intervals(tmp_path, monkeypatch):
    root = tmp_path / "r"
    rng = np.random.default_rng(8)
    target = rng.integers(0, 10, 200)
    for step, level in ((10, 0.2), (20, 0.4)):
        for seed in (1, 2, 3):
            _write(root, f"run-a@step{step}", seed, rng.random(200) < level + 0.04 * seed, target, "1img", "knn",
                   run="run-a", training_step={"value": step, "unit": "step"})
    frame, summary = load_summary(root, reference=None)
    drawn = []
    monkeypatch.setattr(plots, "save_drawn", lambda draw, stem, *inputs: drawn.append(draw()) or [stem])
    assert main(["plot", "series", str(root), "--bands", "ci"]) == 0
    assert main(["plot", "series", str(root)]) == 0
    ci, std = (_bars(fig.axes[0])["run-a (knn)"] for fig in drawn)
    for step in (10, 20):
        low, high, mean, sd = _interval(summary, f"run-a@step{step}", "1img")
        assert ci[float(step)] == pytest.approx((low, high), abs=1e-9)
        assert std[float(step)] == pytest.approx((mean - sd, mean + sd))
    assert "Error bars: 95 % intervals of the cells (seed t + image bootstrap)" in drawn[0].texts[-1].get_text()
    with pytest.raises(BadInputError, match="needs the summary"):
        plots.series_figure(frame, tmp_path / "s", bands="ci")
    # records of another configuration of the step-10 checkpoint: its point mixes two cells and has no interval
    for seed in (1, 2, 3):
        _write(root / "other", "run-a@step10", seed, rng.random(200) < 0.5, target, "1img", "knn", run="run-a",
               training_step={"value": 10, "unit": "step"}, config_digest="another")
    frame, summary = load_summary(root, reference=None)
    assert summary["ci_low"].notna().all() and len(summary) == 3
    plots.series_figure(frame, tmp_path / "s", bands="ci", summary=summary)
    mixed = _bars(drawn[-1].axes[0])["run-a (knn)"]
    assert mixed[10.0] is None and mixed[20.0] == pytest.approx(ci[20.0])
    assert "1 point(s) without a bar" in drawn[-1].texts[-1].get_text()


def test_transfer_panels_draw_the_cells_intervals():
    from lowshot.benchmark.transfer_report import draw_transfer

    rows = [dict(model="a", variant="", method="dino", task="transfer-cifar10", family="transfer", setting=s,
                 classifier="logreg", main_score="top1", config_digest="a", mean=m, std=1.0, n_seeds=n,
                 seeds="1 2 3", chance=10.0, finished="", source="ours", ci_low=low, ci_high=high,
                 ci_method="seed t + image bootstrap" if n > 1 else "none (one seed, no evidence)")
            for s, m, n, low, high in (("1shot", 20.0, 3, 17.0, 24.0), ("2shot", 30.0, 3, 29.0, 33.5),
                                       ("full", 60.0, 1, float("nan"), float("nan")))]
    summary = pd.DataFrame(rows)
    ci, std = (_bars(draw_transfer(summary, b).axes[0])["a logreg"] for b in ("ci", "std"))
    assert [ci[x] for x in (1.0, 2.0, 64.0)] == [(17.0, 24.0), (29.0, 33.5), None]
    assert [std[x] for x in (1.0, 2.0, 64.0)] == [(19.0, 21.0), (29.0, 31.0), None]
