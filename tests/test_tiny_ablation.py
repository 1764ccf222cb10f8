"""The collapse-avoidance ablation as curves (`make ablation-collapse`): `python -m lowshot.benchmark.tiny_models
--ablation ...` scores each variant's EMA teacher while it trains, gathers the curves in curves.csv and draws them
with the series figure; the evaluations leave the trained weights as they would be without them."""
from __future__ import annotations

import json

import pandas as pd
import torch
from safetensors import safe_open

from lowshot.benchmark import figure_style, tiny_models
from lowshot.benchmark.tiny_models import ABLATION, WEIGHTS, main, tiny_config

SHORT = ["--set", "steps=4", "--set", "batch_size=16", "--set", "warmup_steps=1"]


def test_ablation_curves_are_drawn_from_the_csv_and_leave_the_weights_as_without_them(tmp_path, monkeypatch):
    drawn = []
    save_figure = figure_style.save_figure
    monkeypatch.setattr(figure_style, "save_figure", lambda fig, stem: drawn.append(fig) or save_figure(fig, stem))
    monkeypatch.setattr(tiny_models, "linear_probe", lambda path: 0.0)  # the final probe is not this test's subject
    threads = torch.get_num_threads()
    with_eval, without = tmp_path / "with", tmp_path / "without"
    assert main(["--ablation", "both", "sinkhorn", *SHORT, "--eval-every", "2", "--eval-setting", "1img", "2img",
                 "--eval-images", "160", "--out", str(with_eval / "out"), "--work", str(with_eval / "work")]) == 0
    assert torch.get_num_threads() == threads  # the script's one thread is not left to its caller
    # the same two runs without evaluations, two at a time in their own processes
    assert main(["--ablation", "both", "sinkhorn", *SHORT, "--eval-every", "0", "--jobs", "2",
                 "--out", str(without / "out"), "--work", str(without / "work")]) == 0

    for variant in ("both", "sinkhorn"):
        name = f"maskcluster-tiny-{variant}.safetensors"
        assert (with_eval / "out" / name).read_bytes() == (without / "out" / name).read_bytes(), variant
    sums = [json.loads((d / "out" / "tiny-models.json").read_text()) for d in (with_eval, without)]
    assert {k: v["sha256"] for k, v in sums[0].items()} == {k: v["sha256"] for k, v in sums[1].items()}
    assert sums[0]["maskcluster-tiny-both"]["evaluation_minutes"] > 0
    assert not (without / "out" / "curves.csv").exists() and not (without / "work" / "maskcluster-tiny-both" /
                                                                    "evaluations.csv").exists()

    curves = pd.read_csv(with_eval / "out" / "curves.csv")
    assert list(curves.columns) == ["variant", "step", "task", "setting", "classifier", "score", "n_seeds"]
    lines = curves.groupby(["variant", "task", "setting", "classifier"])["step"].apply(list)
    assert len(lines) == 2 * 2 * 2 and all(steps == [0, 2, 4] for steps in lines)  # steps 0 (the init), 2 and 4
    assert set(curves["task"]) == {"embedded-lowshot"} and set(curves["n_seeds"]) == {3}
    assert curves["score"].between(0, 100).all() and curves["score"].nunique() > 1
    for variant in ("both", "sinkhorn"):  # each variant's own evaluations.csv, gathered as they are
        own = pd.read_csv(with_eval / "work" / f"maskcluster-tiny-{variant}" / "evaluations.csv")
        mine = curves[curves["variant"] == variant].drop(columns="variant").reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, own[mine.columns])

    # the figure written is the one drawn from those rows: a panel per setting, its lines the CSV's points
    assert len(drawn) == 1 and (with_eval / "out" / "ablation_curves.png").is_file()
    panels = [ax for ax in drawn[0].axes if ax.get_visible()]
    assert [ax.get_title().split(",")[1].split()[0] for ax in panels] == ["1img", "2img"]
    for ax, setting in zip(panels, ["1img", "2img"]):
        plotted = {c.get_label(): c.lines[0] for c in ax.containers}
        assert sorted(plotted) == ["both (knn)", "both (logreg)", "sinkhorn (knn)", "sinkhorn (logreg)"]
        for label, line in plotted.items():
            variant, classifier = label.rstrip(")").split(" (")
            rows = curves[(curves["variant"] == variant) & (curves["setting"] == setting)
                          & (curves["classifier"] == classifier)]
            assert list(line.get_xdata()) == rows["step"].tolist()
            assert list(line.get_ydata()) == rows["score"].tolist()  # drawn from the evaluations.csv files, as written


def test_the_ablation_both_is_the_shipped_maskcluster_tiny_config():
    """`--ablation both` trains the config the shipped maskcluster-tiny.safetensors records (so on the machine and
    library versions that made it, the same weights)."""
    with safe_open(str(WEIGHTS / "maskcluster-tiny.safetensors"), "pt") as f:
        shipped = json.loads(f.metadata()["config"])
    both = json.loads(tiny_config("maskcluster", collapse=ABLATION["both"]).to_json())
    assert {k: shipped[k] for k in both} == both
    assert set(shipped) - set(both) == {"steps_done", "data_identity", "torch_version", "timm_version"}
    assert tiny_models.ABLATION_EVAL_EVERY and tiny_config("maskcluster").steps % tiny_models.ABLATION_EVAL_EVERY == 0
