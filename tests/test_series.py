"""Checkpoint series on the command line: `--model 'GLOB:name=RUN'`, the training step of each checkpoint in its
records, `lowshot plot series`."""
from __future__ import annotations

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
