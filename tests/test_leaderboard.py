"""Leaderboard tables and figures from records the test writes (no model needed)."""
from __future__ import annotations

import pandas as pd
import pytest

from lowshot.benchmark.cli import main
from lowshot.benchmark.leaderboard import load_summary, write_tables
from lowshot.benchmark.plots import draw_task, family_plots
from lowshot.benchmark.records import record_path, write_record
from lowshot.model_zoo.errors import BadInputError


def _record(results, model, setting, seed, score, task="imagenet-lowshot", family="classification",
            classifier="logreg", main_score="top1"):
    rec = {"model": model, "method": model.split("-")[0], "task": task, "family": family, "setting": setting,
           "seed": seed, "classifier": classifier, "main_score": main_score, "metrics": {main_score: score}}
    write_record(record_path(results, model, task, setting, seed, classifier), rec)


def build(results, out_dir, family=None, sort_by=None):
    """What `lowshot leaderboard RESULTS --out OUT` writes: the four tables of every record under `results`."""
    frame, summary = load_summary(results)
    return write_tables(frame, summary, out_dir, family, sort_by)


@pytest.fixture
def results(tmp_path):
    r = tmp_path / "runs"
    for seed, (a, b, c) in zip((1, 2, 3), ((40.0, 50.0, 60.0), (41.0, 51.0, 59.0), (42.0, 52.0, 61.0))):
        _record(r, "dino-vits16", "1img", seed, a)
        _record(r, "dino-vits16", "2img", seed, b)
        _record(r, "dino-vits16", "5img", seed, c)
    _record(r, "dino-vits16", "1percent", 1, 64.0)  # single seed: no std
    _record(r, "msn-vits16", "1img", 1, 47.5)  # missing settings for this model
    _record(r, "maskcluster-tiny", "5shot", 1, 33.3, task="embedded-multilabel", family="multilabel", main_score="map")
    return r


def test_leaderboard_values(results, tmp_path):
    paths = build(results, tmp_path / "out")
    summary = pd.read_csv(paths["summary"])
    ours = summary[summary["source"] == "ours"]
    row = ours[(ours["model"] == "dino-vits16") & (ours["setting"] == "1img")].iloc[0]
    assert row["mean"] == pytest.approx(41.0) and row["std"] == pytest.approx(1.0) and row["n_seeds"] == 3
    single = ours[(ours["model"] == "dino-vits16") & (ours["setting"] == "1percent")].iloc[0]
    assert single["n_seeds"] == 1 and pd.isna(single["std"])
    wide = pd.read_csv(paths["leaderboard"])
    dino = wide[(wide["model"] == "dino-vits16") & (wide["source"] == "ours")].iloc[0]
    assert dino["imagenet-lowshot 5img logreg mean"] == pytest.approx(60.0)
    msn = wide[(wide["model"] == "msn-vits16") & (wide["source"] == "ours")].iloc[0]
    assert pd.isna(msn["imagenet-lowshot 2img logreg mean"])  # missing setting stays empty
    # a published-only model appears with its reference numbers and is marked as published
    ibot = wide[wide["model"] == "ibot-vitb16"]
    assert list(ibot["source"]) == ["published"] and ibot.iloc[0]["imagenet-lowshot 1img logreg mean"] == pytest.approx(46.1)
    assert len(pd.read_csv(paths["records"])) == 12
    md = paths["markdown"].read_text()
    # cells: mean ± std [95 % t-interval over seeds: these records have no evidence] (n); msn-vits16 is the best of
    # its column (▲); records without data fingerprints do not pair, so dino-vits16 gets no verdict against it
    assert ("| dino-vits16 | dino | ours | 41.0 ± 1.0 [38.5, 43.5] (n=3) | 51.0 ± 1.0 [48.5, 53.5] (n=3) | "
            "60.0 ± 1.0 [57.5, 62.5] (n=3) | 64.0 (n=1) |") in md
    assert "| msn-vits16 | msn | ours | 47.5 (n=1) ▲ | – | – | – |" in md
    multilabel = md[md.index("## embedded-multilabel"):]
    assert "| maskcluster-tiny | maskcluster | ours | 33.3 (n=1) |" in multilabel


def test_filter_and_sort(results, tmp_path):
    paths = build(results, tmp_path / "o", family="multilabel")
    wide = pd.read_csv(paths["leaderboard"])
    assert list(wide["model"]) == ["maskcluster-tiny"]
    paths = build(results, tmp_path / "s", family="classification", sort_by="imagenet-lowshot 1img logreg")
    order = list(pd.read_csv(paths["leaderboard"])["model"])
    assert order.index("msn-vits16") < order.index("dino-vits16")  # 47.5 (and 47.1 published) > 41


def test_malformed_record_reported_and_skipped(results, tmp_path, capsys):
    bad = results / "dino-vits16" / "imagenet-lowshot" / "2img-seed9__logreg.json"
    bad.write_text('{"model": "dino-vits16", "metrics": ')
    nan = results / "dino-vits16" / "imagenet-lowshot" / "5img-seed9__logreg.json"
    nan.write_text('{"model": "dino-vits16", "method": "dino", "task": "imagenet-lowshot", "setting": "5img", '
                   '"seed": 9, "classifier": "logreg", "main_score": "top1", "metrics": {"top1": NaN}}')
    paths = build(results, tmp_path / "out")
    err = capsys.readouterr().err
    assert "2img-seed9__logreg.json" in err and "5img-seed9__logreg.json" in err
    summary = pd.read_csv(paths["summary"])
    row = summary[(summary["source"] == "ours") & (summary["model"] == "dino-vits16") & (summary["setting"] == "5img")]
    assert row.iloc[0]["mean"] == pytest.approx(60.0) and row.iloc[0]["n_seeds"] == 3


def _curves(fig) -> dict:
    """Our curves as drawn: {legend label: (x, y, half-length of each error bar, None where there is none)}."""
    curves = {}
    for container in fig.axes[0].containers:
        if container.get_label().startswith("_"):  # published reference curves carry no label of their own
            continue
        line, _, (bars,) = container.lines
        ends = {float(seg[0][0]): (seg[1][1] - seg[0][1]) / 2 for seg in bars.get_segments() if len(seg)}
        xs = [float(x) for x in line.get_xdata()]
        curves[container.get_label()] = (xs, [float(y) for y in line.get_ydata()], [ends.get(x) for x in xs])
    return curves


def test_figure1_and_family_plots(results, tmp_path, capsys):
    frame, summary = load_summary(results)
    assert main(["plot", "figure1", str(results), "--out", str(tmp_path / "fig")]) == 0
    fig_dir, fam_dir = tmp_path / "fig", tmp_path / "fam"
    assert capsys.readouterr().out.split() == [str(fig_dir / "figure1_imagenet-lowshot.png"),
                                               str(fig_dir / "figure1_imagenet-lowshot.pdf")]
    curves = _curves(draw_task(summary, "imagenet-lowshot", "logreg"))
    assert set(curves) == {"dino-vits16", "msn-vits16"}
    assert curves["dino-vits16"][1:] == ([41, 51, 60, 64], [1, 1, 1, None])  # 1 %: one seed, no error bar
    assert curves["msn-vits16"][1:] == ([47.5], [None])
    # each model's x is its setting's times one factor of its own (dodge), so that error bars never overlap
    dino = [x / s for x, s in zip(curves["dino-vits16"][0], (1, 2, 5, 12.8))]
    msn = curves["msn-vits16"][0][0] / 1
    assert dino == pytest.approx([dino[0]] * 4) and 10 ** -0.08 <= dino[0] < msn <= 10 ** 0.08
    published = [c for c in draw_task(summary, "imagenet-lowshot", "logreg").axes[0].containers
                 if c.get_label().startswith("_")]
    assert any(list(c.lines[0].get_ydata()) == [46.1, 56.2, 64.7, 69.7] for c in published)  # iBOT ViT-B/16
    assert sorted(family_plots(summary, fam_dir)) == sorted(
        fam_dir / f"{stem}.{ext}" for stem in ("figure1_imagenet-lowshot", "multilabel_embedded-multilabel")
        for ext in ("png", "pdf"))
    assert _curves(draw_task(summary, "embedded-multilabel")) == {"maskcluster-tiny": ([5], [33.3], [None])}
    assert main(["plot", "figure1", str(results), "--task", "embedded-lowshot", "--out", str(tmp_path / "x")]) == 2
    assert "error: no classification results for task 'embedded-lowshot'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_family_plots_of_a_knn_only_run(tmp_path):
    """A run with --classifier knn has no logistic-regression Figure 1: its k-NN curve is plotted instead."""
    r = tmp_path / "runs"
    for setting in ("1img", "2img"):
        _record(r, "dino-tiny", setting, 1, 10.0, task="embedded-lowshot", classifier="knn")
    _, summary = load_summary(r)
    fam = tmp_path / "fam"
    assert sorted(family_plots(summary, fam)) == [fam / "classification_embedded-lowshot_knn.pdf",
                                                  fam / "classification_embedded-lowshot_knn.png"]
    assert _curves(draw_task(summary, "embedded-lowshot", "knn")) == {"dino-tiny": ([1, 2], [10, 10], [None, None])}
    with pytest.raises(BadInputError, match="no classification results for task 'embedded-lowshot' and classifier logreg"):
        draw_task(summary, "embedded-lowshot", "logreg")


def test_a_figure_is_redrawn_exactly_when_what_it_shows_changed(results, tmp_path, monkeypatch):
    """`family_plots` again on the same records draws nothing and leaves the files as they were; a changed score
    (any record: the figures' inputs are the whole summary), other error bars or a missing file draws again."""
    from lowshot.benchmark import figure_style

    out = tmp_path / "fam"
    drawn = []
    save = figure_style.save_figure
    monkeypatch.setattr(figure_style, "save_figure",
                        lambda fig, stem, stamp: drawn.append(fig) or save(fig, stem, stamp))

    def plots_of(bands="std"):
        drawn.clear()
        family_plots(load_summary(results)[1], out, bands)
        return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.iterdir())}

    first = plots_of()
    assert len(drawn) == 2 and len(first) == 4  # Figure 1 and the multi-label figure, png and pdf each
    assert plots_of() == first and drawn == []
    _record(results, "msn-vits16", "1img", 1, 49.5)  # one score changed
    changed = plots_of()
    assert len(drawn) == 2
    msn = next(c for c in drawn[0].axes[0].containers if c.get_label() == "msn-vits16")
    assert list(msn.lines[0].get_ydata()) == [49.5]
    assert changed["figure1_imagenet-lowshot.png"][1] != first["figure1_imagenet-lowshot.png"][1]
    (out / "multilabel_embedded-multilabel.pdf").unlink()
    plots_of()
    assert len(drawn) == 1 and (out / "multilabel_embedded-multilabel.pdf").is_file()
    plots_of(bands="ci")
    assert len(drawn) == 2
