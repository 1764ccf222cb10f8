"""What a researcher reads: per-task tables (settings in the order of their labelled images, seeds in every cell,
published rows with their sources), honest figures (chance line, single seeds marked, error bars explained) and
the HTML report (self-contained; sorted and loaded in a real headless browser)."""
from __future__ import annotations

import os
import re
import shutil

import matplotlib.colors as mcolors
import pandas as pd
import pytest

from lowshot.benchmark.cli import main
from lowshot.benchmark.leaderboard import REFERENCE, load_reference, load_summary
from lowshot.benchmark.plots import draw_task
from lowshot.benchmark.records import record_path, write_record
from lowshot.benchmark.report import render, write_report
from lowshot.benchmark.transfer_report import draw_transfer
from lowshot.tasks.registry import declaration

from .test_leaderboard import build  # load_summary + write_tables: what `lowshot leaderboard` writes

ML = "embedded-multilabel"


def _record(results, model, task, setting, seed, score, num_train, num_classes=16, classifier="logreg",
            converged=True, chance=15.0, family="multilabel", main_score="map"):
    rec = {"model": model, "method": model.split("-")[0], "task": task, "family": family, "setting": setting,
           "seed": seed, "classifier": classifier, "main_score": main_score, "metrics": {main_score: score},
           "num_train": num_train, "num_classes": num_classes, "checkpoint_sha256": "ab" * 32,
           "config_digest": f"{model}-cfg", "convergence": {"converged": converged},
           "chance": {"value": chance, "rule": "test"}, "feature": "cls", "split_source": f"{setting}-seed{seed}.txt",
           "hyperparameters": {"lambd": 0.0025}, "hyperparameters_chosen_by": "test"}
    write_record(record_path(results, model, task, setting, seed, classifier, rec["config_digest"]), rec)


@pytest.fixture
def results(tmp_path):
    """Multi-label records where 1 % (20 images) holds fewer labelled images than 5-shot (43), as in the embedded
    task: declared order 1shot, 5shot, 1percent; labelled-image order 1shot, 1percent, 5shot."""
    r = tmp_path / "runs"
    for seed in (1, 2, 3):
        _record(r, "dino-tiny", ML, "1shot", seed, 14.0 + seed, 9)
        _record(r, "dino-tiny", ML, "5shot", seed, 16.0 + seed, 43, converged=seed != 2)
        _record(r, "dino-tiny", ML, "1percent", seed, 15.0 + seed, 20)
        _record(r, "msn-tiny", ML, "1shot", seed, 20.0 + seed, 9)
    _record(r, "dino-tiny", ML, "full", 1, 26.0, 2000, converged=False)
    _record(r, "msn-tiny", ML, "5shot", 1, 30.0, 43)
    return r


def _without_intervals_and_marks(row: str) -> str:
    return re.sub(r" \[[^\]]*\]| [▲≈]", "", row)


def test_tables_order_settings_by_labelled_images_and_show_the_seeds(results, tmp_path):
    paths = build(results, tmp_path / "out")
    md = paths["markdown"].read_text()
    section = md[md.index(f"## {ML}"):]
    header = next(line for line in section.splitlines() if line.startswith("| model"))
    assert header.split(" | ")[3:] == ["1shot", "1percent", "5shot", "full |"]
    dino = next(line for line in section.splitlines() if line.startswith("| dino-tiny"))
    # cells: mean ± std, the 95 % interval over seeds (t, 2 degrees of freedom: ± 2.48), n, †, the column's mark
    assert dino.split(" | ")[3:5] == ["16.0 ± 1.0 [13.5, 18.5] (n=3)", "17.0 ± 1.0 [14.5, 19.5] (n=3)"]
    dino = _without_intervals_and_marks(dino)
    assert "| 18.0 ± 1.0 (n=3) † |" in dino  # 5shot, one seed did not converge
    assert dino.endswith("26.0 (n=1) † |")  # one seed: no std, and its n
    msn = next(line for line in section.splitlines() if line.startswith("| msn-tiny"))
    assert msn.split(" | ")[3] == "22.0 ± 1.0 [19.5, 24.5] (n=3) ▲"  # the best of its column
    assert _without_intervals_and_marks(msn).split(" | ")[3:] == ["22.0 ± 1.0 (n=3)", "–", "30.0 (n=1)", "– |"]
    assert "1percent: 20 images (1.25 per class)" in section
    # every value stays in the CSVs
    records = pd.read_csv(paths["records"])
    assert len(records) == 14 and set(records["num_train"]) == {9, 20, 43, 2000}
    assert list(records.loc[~records["converged"], "setting"].sort_values()) == ["5shot", "full"]
    summary = pd.read_csv(paths["summary"])
    five = summary[(summary["model"] == "dino-tiny") & (summary["setting"] == "5shot")].iloc[0]
    assert five["n_seeds"] == 3 and five["not_converged"] == 1 and five["per_class"] == pytest.approx(43 / 16, abs=1e-3)


def test_a_tasks_label_free_scores_get_their_own_heading(results, tmp_path):
    _record(results, "dino-tiny", ML, "full", 1, 5.4, 2000, classifier="rankme", family="label-free",
            main_score="rankme")
    md = build(results, tmp_path / "out")["markdown"].read_text()
    headings = [line for line in md.splitlines() if line.startswith(f"## {ML}")]
    assert headings == [f"## {ML}", f"## {ML} (label-free)"]
    page = render(results)
    assert page.count(f">{ML} (label-free)</a>") == 1 and page.count(f">{ML}</a>") == 1


def test_figure_positions_chance_line_single_seeds_and_caption(results):
    _, summary = load_summary(results, reference=None)
    fig = draw_task(summary, ML)
    ax = fig.axes[0]
    labels = [t.get_text().strip() for t in ax.get_xticklabels()]
    assert labels == ["1", "1 %", "5", "100 %"]  # in the order of labelled images, not the declared one
    assert list(ax.get_xticks()) == pytest.approx([9 / 16, 20 / 16, 43 / 16, 2000 / 16])
    dino = ax.containers[0]  # curves in model order: dino-tiny first
    shift = dino.lines[0].get_xdata()[0] / (9 / 16)  # the model's own factor along the log axis (dodge)
    assert list(dino.lines[0].get_xdata()) == pytest.approx([shift * x for x in (9 / 16, 20 / 16, 43 / 16, 2000 / 16)])
    assert 10 ** -0.08 <= shift < 1
    chance = [line for line in ax.get_lines() if line.get_label().startswith("chance")]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [15.0, 15.0]
    halves = [line for line in ax.get_lines() if line.get_fillstyle() == "left" and len(line.get_xdata())]
    msn_shift = ax.containers[1].lines[0].get_xdata()[0] / (9 / 16)
    assert msn_shift > shift  # the two models' points never share an x
    assert [x for line in halves for x in line.get_xdata()] == pytest.approx(
        [shift * 2000 / 16, msn_shift * 43 / 16]) and [len(line.get_xdata()) for line in halves] == [1, 1]
    # dino full, msn 5shot: one seed each, half-filled
    assert mcolors.to_hex(halves[0].get_markerfacecoloralt()) == "#ffffff"
    caption = fig.texts[-1].get_text()
    assert "± sample std over 3 seeds" in caption and "one seed" in caption and "chance level (15.0)" in caption


def test_transfer_figure_has_error_bars_single_seeds_chance_and_caption(tmp_path):
    r, task = tmp_path / "runs", "embedded-transfer"
    for seed in (1, 2, 3):
        _record(r, "dino-tiny", task, "1shot", seed, 18.0 + 2 * seed, 12, num_classes=12, chance=8.3,
                family="transfer", main_score="top1")
    _record(r, "dino-tiny", task, "full", 1, 40.0, 600, num_classes=12, chance=8.3, family="transfer",
            main_score="top1")
    _, summary = load_summary(r, reference=None)
    fig = draw_transfer(summary)
    ax = fig.axes[0]
    bars = ax.containers[0]
    assert list(bars.lines[0].get_ydata()) == [22.0, 40.0]
    segments = [s for s in bars.lines[2][0].get_segments() if len(s)]  # 1shot: mean ± std (std 2); full: none
    assert len(segments) == 1 and [y for _, y in segments[0]] == pytest.approx([20.0, 24.0])
    halves = [line for line in ax.get_lines() if line.get_fillstyle() == "left" and len(line.get_xdata())]
    assert [list(line.get_ydata()) for line in halves] == [[40.0]]
    chance = [line for line in ax.get_lines() if line.get_label() == "chance level"]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [8.3, 8.3]
    text = fig.texts[-1].get_text()
    assert "± sample std over 3 seeds" in text and "one seed" in text and "chance level" in text


def test_published_rows_name_their_source_and_their_task():
    ref = load_reference(REFERENCE)
    assert not ref.empty and ref["source"].str.len().gt(len("published: ")).all()
    for _, row in ref.iterrows():
        entry = declaration(row["task"])
        assert row["setting"] in [s.name for s in entry.declared_settings]
        assert row["classifier"] in entry.protocol.classifiers
        assert row["n_seeds"] >= 1 and (row["n_seeds"] == 1) == pd.isna(row["std"])


def test_published_rows_appear_in_their_task_table_with_the_citation(tmp_path):
    (tmp_path / "empty").mkdir()
    md = build(tmp_path / "empty", tmp_path / "out")["markdown"].read_text()
    section = md[md.index("## imagenet-lowshot"):]
    row = next(line for line in section.splitlines() if line.startswith("| msn-vits16"))
    assert "| published [1] | 47.1 ± 0.1 (n=3) |" in row
    assert "[1] MSN paper (Assran et al., ECCV 2022)" in section


def test_the_report_is_self_contained(results, tmp_path):
    page = render(results)
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", page)  # images inline, links inside the page
    assert "@import" not in page and "url(" not in page and "fetch(" not in page
    assert page.count("<img ") == 1 and "default-src 'none'" in page
    table = page[page.index(f'data-task="{ML}"'):]
    assert table[:table.index("</table>")].count('class="cell') == 6  # one provenance cell per value (dino 4, msn 2)
    assert "checkpoint sha256: " + "ab" * 32 in page and "NOT CONVERGED" in page


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_the_report_in_a_headless_browser(results, tmp_path):
    """Open the page in Chromium, sort a column both ways, check the order, that every figure loads, that a cell's
    provenance opens, and that nothing but the page itself is requested."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install "
                                     "playwright; the browser itself comes from Debian: apt-get install chromium)")
    executable = os.environ.get("LOWSHOT_CHROMIUM") or _browser()
    if executable is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set LOWSHOT_CHROMIUM); .ci/run installs it")
    out = write_report(results, tmp_path / "report.html")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page()
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(out.as_uri())
        table = page.locator(f'table.board[data-task="{ML}"]')
        headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
        column = headers.index("1shot")

        def models():
            return [m.strip() for m in table.locator("tbody tr td:first-child").all_inner_texts()]

        def values():
            return [c.strip() for c in table.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()]

        table.locator("thead th").nth(column).click()
        assert table.locator("thead th").nth(column).get_attribute("aria-sort") == "ascending"
        assert models() == ["dino-tiny", "msn-tiny"] and values()[0].startswith("16.0")
        table.locator("thead th").nth(column).click()
        assert models() == ["msn-tiny", "dino-tiny"] and values()[0].startswith("22.0")
        table.locator("thead th").nth(headers.index("1percent")).click()  # a missing value sorts last
        assert models() == ["dino-tiny", "msn-tiny"]
        loaded = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert loaded == [True]
        table.locator("tbody tr", has_text="dino-tiny").locator("td.cell").nth(2).click()
        panel = page.locator(".provenance.open")
        assert "5shot" in panel.inner_text() and "NOT CONVERGED" in panel.inner_text()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert requests == [out.as_uri()]


def test_report_command(results, tmp_path, capsys):
    assert main(["report", str(results), "--out", str(tmp_path / "r.html")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r.html")
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "results directory" in capsys.readouterr().err
