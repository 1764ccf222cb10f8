"""timm models by architecture name: plain timm state dicts read with the generic method (`--arch`), timm build
options (`timm:<arch>:img_size=64`) in the identity, and a file that does not fit refused in one line. Tiny random
models built here; the hub is replaced by a local cache of the same layout (no download)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import save_file

import lowshot
from lowshot.benchmark.features import model_identity
from lowshot.benchmark.model_specs import split_options
from lowshot.model_zoo import load_model
from lowshot.model_zoo.errors import BadInputError, LowshotWarning
from lowshot.model_zoo.timm_models import parse_arch

from .test_faults import lowshot as run_cli

RUN = dict(settings=["1img"], classifiers=["knn"])
CLI_RUN = ["--task", "embedded-lowshot", "--setting", "1img", "--classifier", "knn", "--workers", "0", "--quiet"]
ARCH = "vit_tiny_patch16_224:img_size=64:depth=2"  # a build option beyond the size: two blocks
HUB_FILE = "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k/snapshots/0123abcd/model.safetensors"


def _vit(seed: int, **kwargs):
    torch.manual_seed(seed)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs)
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(0.02 * torch.randn_like(p))  # no zero biases: every tensor counts
    return vit.eval()


@pytest.mark.slow
def test_a_series_of_plain_timm_state_dicts_is_read_as_the_timm_architecture(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    # as a training loop saves them: with their classifier, one as a torch pickle, one as safetensors
    modules = {100: _vit(1, img_size=64, depth=2, num_classes=10), 200: _vit(2, img_size=64, depth=2, num_classes=10)}
    torch.save(modules[100].state_dict(), run / "ckpt-step100.pth")
    save_file(modules[200].state_dict(), str(run / "ckpt-step200.safetensors"))
    results = tmp_path / "r"
    code, _, err = run_cli(["bench", "--model", f"{run}/ckpt-*:name=vt", "--arch", ARCH, *CLI_RUN,
                            "--results", str(results), "--cache", str(tmp_path / "c")])
    assert code == 0, err
    cli = pd.read_csv(results / "records.csv")
    assert sorted(set(cli["model"])) == ["vt@step100", "vt@step200"] and set(cli["method"]) == {"timm"}

    for step, module in modules.items():  # the same scores as the module in memory, as timm runs it
        ours = lowshot.evaluate(module, "embedded-lowshot", **RUN).set_index("seed")["score"].sort_index()
        theirs = cli[cli["model"] == f"vt@step{step}"].set_index("seed")["score"].sort_index()
        assert len(ours) == 3 and ours.index.equals(theirs.index) and (ours.values == theirs.values).all(), step
    from_python = lowshot.evaluate(run / "ckpt-step100.pth", "embedded-lowshot", arch=ARCH, **RUN)  # arch= as --arch
    assert set(from_python["method"]) == {"timm"}
    assert (from_python.set_index("seed")["score"].sort_index().values
            == cli[cli["model"] == "vt@step100"].set_index("seed")["score"].sort_index().values).all()

    record = json.loads(next(results.rglob("*.json")).read_text())
    assert (record["method"], record["layout"], record["model_source"]) == ("timm", "timm", "file")
    config = record["config"]["model"]
    assert config["eval_config"]["method"] == "timm" and config["eval_config"]["pos_embed_rule"] == "model"
    assert config["eval_config"]["mean"] == list(timm.data.resolve_data_config({}, model=modules[100])["mean"])
    assert record["architecture"]["build"] == config["architecture"]["build"] == {
        "arch": "vit_tiny_patch16_224", "img_size": 64, "depth": 2}


def test_the_generic_method_gives_the_modules_own_features_and_transform(tmp_path):
    module = _vit(3, img_size=64, depth=2, num_classes=0)
    save_file(module.state_dict(), str(tmp_path / "vt.safetensors"))
    model = load_model(tmp_path / "vt.safetensors", method="timm", arch=ARCH)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = module.forward_features(x)
    feats = model.extract(x, ["cls", "patch", "pooled"])
    assert (feats["cls"] - tokens[:, 0]).abs().max() < 1e-6 and (feats["patch"] - tokens[:, 1:]).abs().max() < 1e-6
    cfg = timm.data.resolve_data_config({}, model=module)
    transform = model.transform(64, 64)
    assert (transform.interpolation, transform.mean, transform.std) == (cfg["interpolation"], cfg["mean"], cfg["std"])
    assert (model.info.method, model.info.layout, model.eval_config.method) == ("timm", "timm", "timm")


def test_the_feature_follows_the_architectures_global_pool(tmp_path):
    module = _vit(4, img_size=64, depth=2, num_classes=0, global_pool="avg")  # a CLS token, average pooled
    torch.save(module.state_dict(), tmp_path / "avg.pth")
    model = load_model(tmp_path / "avg.pth", arch=f"{ARCH}:global_pool=avg")
    assert model.lowshot_feature == model.eval_config.knn_feature == "pooled"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = module.forward_head(module.forward_features(x), pre_logits=True)  # fc_norm over the mean patch
    assert (model(x) - want).abs().max() < 1e-6


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """The hub's weights of timm:vit_tiny_patch16_224 (random here, and two blocks deep: `:depth=2` reads them) in a
    local hub cache; the hub is offline."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    weights = cache / HUB_FILE
    weights.parent.mkdir(parents=True)
    save_file(_vit(5, num_classes=0, depth=2).state_dict(), str(weights))
    (weights.parents[2] / "refs").mkdir()
    (weights.parents[2] / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return weights


@pytest.mark.slow
def test_timm_build_options_build_that_model_and_are_part_of_its_identity(hub_cache, tmp_path):
    default = load_model("timm:vit_tiny_patch16_224:depth=2")
    with pytest.warns(LowshotWarning, match=r"resampled pos_embed \(1, 197, 192\) -> \(1, 17, 192\)"):
        small = load_model("timm:vit_tiny_patch16_224:depth=2:img_size=64")
    with pytest.warns(LowshotWarning, match="patch_embed.proj.weight"):
        patch8 = load_model("timm:vit_tiny_patch16_224:depth=2:patch_size=8:img_size=64")
    assert tuple(default.backbone.model.pos_embed.shape) == (1, 197, 192)
    assert tuple(small.backbone.model.pos_embed.shape) == (1, 17, 192)  # the 4 x 4 grid of 64 px
    assert tuple(patch8.backbone.model.pos_embed.shape) == (1, 65, 192) and patch8.patch_size == 8
    assert small.info.checkpoint == default.info.checkpoint == str(hub_cache) and small.info.revision == "0123abcd"
    identities = [json.dumps(model_identity(m), sort_keys=True) for m in (default, small, patch8)]
    assert len(set(identities)) == 3

    # from lowshot.evaluate, under one name: the two builds never share records
    results = tmp_path / "r"
    first = lowshot.evaluate("timm:vit_tiny_patch16_224:depth=2:img_size=64", "embedded-lowshot", name="t",
                             results=results, **RUN)
    second = lowshot.evaluate("timm:vit_tiny_patch16_224:depth=2", "embedded-lowshot", name="t", results=results,
                              **RUN)
    assert set(first["config_digest"]).isdisjoint(second["config_digest"])
    assert len(list(results.rglob("*.json"))) == 6
    # ... and from the CLI, the options in any order around the name: the records evaluate wrote are found done
    code, out, err = run_cli(["bench", "--model", "timm:vit_tiny_patch16_224:name=t:img_size=64:depth=2", *CLI_RUN,
                              "--results", str(results), "--cache", str(tmp_path / "c")])
    assert code == 0 and "0 record(s) written" in out, err


def test_a_state_dict_that_does_not_fit_is_refused_in_one_line(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(_vit(6, img_size=64, depth=2, num_classes=0).state_dict(), path)
    code, out, err = run_cli(["bench", "--model", str(path), "--arch", "vit_small_patch16_224:img_size=64", *CLI_RUN,
                              "--results", str(tmp_path / "r")])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(path) in lines[0] and "vit_small_patch16_224" in lines[0]
    assert "missing (120): ['blocks.2.norm1.weight'" in lines[0]  # ten blocks of twelve tensors
    # mis-shaped: every tensor of the two blocks, the embeddings and the norm (width 192, not 384); the first shown
    assert "mis-shaped (30): [" in lines[0] and "cls_token: file (1, 1, 192) vs model (1, 1, 384)" in lines[0]
    assert "blocks.1" not in lines[0]  # the first shape mismatch only


def test_options_and_flags_that_do_not_go_together_are_named(tmp_path):
    assert split_options("timm:vit_tiny_patch16_224:name=a:img_size=64:step=from-name") == (
        "timm:vit_tiny_patch16_224:img_size=64", {"name": "a", "step": "from-name"})
    with pytest.raises(BadInputError, match="--model run/x.pth:img_size=64: img_size=64: build options go with a "
                                            "timm:<name>.*--arch"):
        split_options("run/x.pth:img_size=64")
    assert parse_arch("vit_tiny_patch16_224.dino:img_size=64:class_token=false:x=a", "--arch") == (
        "vit_tiny_patch16_224.dino", {"img_size": 64, "class_token": False, "x": "a"})
    with pytest.raises(BadInputError, match="--arch: checkpoint_path= is not a build option"):
        parse_arch("vit_tiny_patch16_224:checkpoint_path=/etc/passwd", "--arch")
    path = tmp_path / "x.pth"
    torch.save(_vit(7, img_size=64, depth=2, num_classes=0).state_dict(), path)
    code, _, err = run_cli(["bench", "--model", str(path), "--method", "timm", *CLI_RUN])
    assert code == 2 and "name it with --arch" in err
    code, _, err = run_cli(["bench", "--model", str(path), "--arch", ARCH, "--num-heads", "3", *CLI_RUN])
    assert code == 2 and "--num-heads go(es) with the release methods" in err
    code, _, err = run_cli(["bench", "--model", str(path), "--arch", "vit_tiny_patch16_224:foo=1", *CLI_RUN])
    assert code == 2 and "timm cannot build vit_tiny_patch16_224 with foo=1" in err
