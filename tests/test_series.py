"""Checkpoint series on the command line: `--model 'GLOB:name=RUN'`, the training step of each checkpoint in its
records, `lowshot plot series`."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from lowshot.benchmark.cli import main
from lowshot.benchmark.model_specs import expand_model, split_options, step_from_name
from lowshot.model_zoo.errors import BadInputError, MissingFileError


def _dino_full_checkpoint(path, epoch: int, seed: int):
    """A DINO-layout full checkpoint (student / teacher with `backbone.` keys, the epoch) of a tiny ViT."""
    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=64, patch_size=16, embed_dim=64, depth=1, num_heads=2, num_classes=0)
    backbone = {f"backbone.{k}": v for k, v in vit.state_dict().items()}
    torch.save({"student": backbone, "teacher": backbone, "epoch": epoch}, path)


def test_a_glob_of_checkpoints_is_one_series_with_the_epoch_each_file_stores(tmp_path, capsys):
    run = tmp_path / "run-a"
    run.mkdir()
    for epoch, seed in ((10, 1), (20, 2), (30, 3)):
        _dino_full_checkpoint(run / f"checkpoint{epoch // 10:04d}.pth", epoch, seed)
    results = tmp_path / "r"
    assert main(["bench", "--model", f"{run}/checkpoint*.pth:name=mc-a", "--num-heads", "2", "--method", "dino", "--task",
                 "embedded-lowshot", "--setting", "1img", "--classifier", "knn", "--results", str(results),
                 "--cache", str(tmp_path / "c"), "--workers", "0", "--quiet"]) == 0
    records = pd.read_csv(results / "records.csv")
    by_model = records.groupby("model").agg(run=("run", "first"), step=("training_step", "first"),
                                            unit=("step_unit", "first"), n=("seed", "count"))
    assert by_model.index.tolist() == ["mc-a@epoch10", "mc-a@epoch20", "mc-a@epoch30"]
    assert by_model["step"].tolist() == [10, 20, 30]  # from the file (its names say 1, 2, 3)
    assert set(by_model["run"]) == {"mc-a"} and set(by_model["unit"]) == {"epoch"} and set(by_model["n"]) == {3}
    capsys.readouterr()
    assert main(["plot", "series", str(results)]) == 0
    assert capsys.readouterr().out.split() == [str(results / "series.png"), str(results / "series.pdf")]


def test_the_step_comes_from_the_file_name_when_the_file_stores_none_or_when_asked(tmp_path):
    _dino_full_checkpoint(tmp_path / "ckpt_ep7.pth", 70, 0)
    assert main(["bench", "--model", f"{tmp_path}/ckpt_ep7.pth:name=x:step=from-name", "--num-heads", "2", "--method", "dino", "--task",
                 "embedded-lowshot", "--setting", "1img", "--classifier", "knn", "--results", str(tmp_path / "r"),
                 "--cache", str(tmp_path / "c"), "--workers", "0", "--quiet"]) == 0
    records = pd.read_csv(tmp_path / "r" / "records.csv")
    assert set(records["model"]) == {"x"} and set(records["training_step"]) == {7}


def test_model_options_and_steps_in_file_names():
    assert split_options("py:mods.vit:make:name=mine") == ("py:mods.vit:make", {"name": "mine"})
    assert split_options("timm:vit_small_patch16_224.dino") == ("timm:vit_small_patch16_224.dino", {})
    assert split_options("a.pth:step=from-name:name=b") == ("a.pth", {"name": "b", "step": "from-name"})
    with pytest.raises(BadInputError, match="step=from-name"):
        split_options("a.pth:step=12")
    assert step_from_name("runs/x/checkpoint0040.pth") == {"value": 40, "unit": "step", "from": "file name"}
    assert step_from_name("vit_ep30.pth")["unit"] == "epoch"
    assert step_from_name("model-step1000.safetensors")["value"] == 1000
    assert step_from_name("dino_vitbase16_pretrain.pth") is None
    with pytest.raises(MissingFileError, match="no file matches"):
        expand_model("/nonexistent/dir/*.pth:name=a")


def test_plot_series_without_steps_is_one_clear_error(tmp_path, capsys):
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=64, patch_size=16, embed_dim=64, depth=1, num_heads=2, num_classes=0)
    torch.save(vit.state_dict(), tmp_path / "plain.pth")  # a flat backbone: no step in the file or its name
    assert main(["bench", "--model", str(tmp_path / "plain.pth"), "--num-heads", "2", "--method", "dino", "--task",
                 "embedded-lowshot", "--setting", "1img", "--classifier", "knn", "--results", str(tmp_path / "r"),
                 "--cache", str(tmp_path / "c"), "--workers", "0", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["plot", "series", str(tmp_path / "r")]) == 2
    assert "no record has a training step" in capsys.readouterr().err


def test_models_are_dodged_and_a_series_takes_a_sequential_colour_map():
    from lowshot.benchmark.plots import DODGE_SPAN, curve_styles, draw_task, dodge

    factors = [dodge(i, 12) for i in range(12)]
    assert factors == sorted(factors) and len(set(factors)) == 12
    assert math.log10(factors[-1] / factors[0]) <= DODGE_SPAN + 1e-12
    curves = [f"run-a@step{s}" for s in (100, 1000, 300)] + [f"model-{i}" for i in range(12)]
    styles = curve_styles(curves)
    series = [styles[f"run-a@step{s}"] for s in (100, 300, 1000)]
    assert len({s["marker"] for s in series}) == 1 and len({s["color"] for s in series}) == 3
    assert [sum(s["color"][:3]) for s in series] == sorted((sum(s["color"][:3]) for s in series), reverse=True)
    others = {(styles[c]["marker"], styles[c]["color"], styles[c]["line"]) for c in curves[3:]}
    assert len(others) == 12  # beyond the palette's 8 colours, still one look per model

    rows = [dict(model=m, variant="", method="dino", task="embedded-lowshot", family="classification",
                 setting=s, classifier="knn", main_score="top1", config_digest=m, mean=10.0, std=1.0, n_seeds=3,
                 seeds="1 2 3", num_train=16 * int(s[0]), per_class=float(s[0]), not_converged=0, chance=6.25,
                 finished="", source="ours") for m in ("a", "b", "c") for s in ("1img", "2img")]
    fig = draw_task(pd.DataFrame(rows), "embedded-lowshot", classifier="knn")
    xs = {c.get_label(): tuple(c.lines[0].get_xdata()) for c in fig.axes[0].containers if c.get_label() in "abc"}
    assert sorted(xs) == ["a", "b", "c"] and len({x[0] for x in xs.values()}) == 3  # apart at 1 image per class
