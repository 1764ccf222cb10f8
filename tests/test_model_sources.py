"""timm:, hf: and py: models: tiny random models built and saved here (no download), loaded through the suite,
matched to the library's own forward; provenance in records; offline errors that say what to pass instead."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import timm
import torch

from lowshot.model_zoo import load_model
from lowshot.model_zoo.errors import BadInputError, MissingFileError, UnknownNameError

from .test_faults import lowshot

ONE_SPLIT = ["--task", "embedded-lowshot", "--setting", "1percent", "--workers", "0", "--quiet"]


def _random(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    """vit_tiny_patch16_224 with random weights, saved as a local weights file."""
    path = tmp_path_factory.mktemp("timm") / "vit_tiny.pth"
    model = _random(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0))
    torch.save(model.state_dict(), path)
    return path, model


def test_timm_model_from_a_local_weights_file(timm_file):
    path, reference = timm_file
    model = load_model("timm:vit_tiny_patch16_224", weights_file=path)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        tokens = reference.forward_features(x)
    feats = model.extract(x, ["cls", "patch", "cls_last4", "pooled", "cls_prenorm"])
    assert (feats["cls"] - tokens[:, 0]).abs().max() < 1e-5
    assert (feats["patch"] - tokens[:, 1:]).abs().max() < 1e-5
    assert (feats["pooled"] - reference.forward_head(tokens, pre_logits=True)).abs().max() < 1e-5
    assert feats["cls_last4"].shape == (2, 4 * 192)
    assert model.info.source == "timm" and model.info.checkpoint == str(path)
    assert model.eval_config.interpolation == "bicubic" and model.eval_config.mean == (0.5, 0.5, 0.5)  # timm's cfg
    assert model.extract(torch.randn(1, 3, 64, 96), ["patch"])["patch"].shape == (1, 24, 192)  # dynamic size


def test_timm_model_without_a_class_token_offers_pooled(tmp_path):
    reference = _random(timm.create_model("vit_wee_patch16_reg1_gap_256", pretrained=False, num_classes=0,
                                         dynamic_img_size=True))
    path = tmp_path / "wee.pth"
    torch.save(reference.state_dict(), path)
    model = load_model("timm:vit_wee_patch16_reg1_gap_256", weights_file=path)
    assert model.lowshot_feature == "pooled" and "cls" not in model.features() and "registers" in model.features()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = reference.forward_head(reference.forward_features(x), pre_logits=True)
    assert (model.extract(x, ["pooled"])["pooled"] - want).abs().max() < 1e-5
    with pytest.raises(ValueError, match="no class token .*use 'pooled'"):
        model.extract(x, ["cls"])


def test_timm_offline_names_what_could_not_be_fetched(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(MissingFileError, match="timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k.*--weights-file"):
        load_model("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    with pytest.raises(UnknownNameError, match="timm has no model"):
        load_model("timm:vit_nonexistent_patch3")
    with pytest.raises(MissingFileError, match="hf:facebook/dinov2-small: could not fetch .*hf:DIRECTORY"):
        load_model("hf:facebook/dinov2-small")


transformers = pytest.importorskip("transformers", reason="hf: models need the [hf] extra (transformers)")


def _hf_dir(tmp_path, kind: str):
    small = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, patch_size=8,
                 image_size=32)
    model = {"dinov2": lambda: transformers.Dinov2Model(transformers.Dinov2Config(**small)),
             "dinov2_reg": lambda: transformers.Dinov2WithRegistersModel(
                 transformers.Dinov2WithRegistersConfig(num_register_tokens=2, **small)),
             "dinov3": lambda: transformers.DINOv3ViTModel(
                 transformers.DINOv3ViTConfig(num_register_tokens=2, **small)),
             "mae": lambda: transformers.ViTMAEModel(transformers.ViTMAEConfig(**small))}[kind]()
    model = _random(model)
    model.save_pretrained(tmp_path / kind)
    transformers.BitImageProcessor(image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3],
                                   resample=3).save_pretrained(tmp_path / kind)
    return tmp_path / kind, model


@pytest.mark.parametrize("kind", ["dinov2", "dinov2_reg", "dinov3"])
def test_hf_model_from_a_local_directory(tmp_path, kind):
    directory, reference = _hf_dir(tmp_path, kind)
    model = load_model(f"hf:{directory}")
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        out = reference(pixel_values=x).last_hidden_state
    p = 1 if kind == "dinov2" else 3  # CLS, then 2 registers / storage tokens
    feats = model.extract(x, ["cls", "patch"])
    assert (feats["cls"] - out[:, 0]).abs().max() < 1e-5
    assert (feats["patch"] - out[:, p:]).abs().max() < 1e-5
    assert model.num_registers == p - 1
    assert model.eval_config.mean == (0.4, 0.5, 0.6) and model.eval_config.interpolation == "bicubic"
    assert model.info.source == "hf" and model.info.checkpoint.endswith("model.safetensors")


def test_hf_mae_keeps_every_patch_in_order(tmp_path):
    directory, reference = _hf_dir(tmp_path, "mae")
    model = load_model(f"hf:{directory}")
    x = torch.randn(2, 3, 32, 32)
    reference.config.mask_ratio = 0.0
    with torch.no_grad():  # shuffled by random noise, then put back in order with ids_restore
        out = reference(pixel_values=x)
    restore = out.ids_restore.unsqueeze(-1).expand(-1, -1, 32)
    unshuffled = torch.gather(out.last_hidden_state[:, 1:], 1, restore)
    assert (model.extract(x, ["patch"])["patch"] - unshuffled).abs().max() < 1e-5


MODULE = '''
import torch, timm
from lowshot.model_zoo.sources import TokenAdapter

class Tiny(torch.nn.Module):
    """Patchify, 2 blocks of an MLP over tokens, a CLS made by mean pooling."""
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Conv2d(3, 24, 8, 8)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(24, 24) for _ in range(2))
        self.norm = torch.nn.LayerNorm(24)

    def tokens(self, x, k):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([t.mean(1, keepdim=True), t], 1)
        outs = []
        for block in self.blocks:
            t = t + torch.tanh(block(t))
            outs.append(t)
        return outs[-k:]

def make():
    return Tiny(), TokenAdapter(block_outputs=lambda m, x, k: m.tokens(x, k), norm=lambda m, t: m.norm(t),
                                embed_dim=24, depth=2, patch_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

def make_timm():
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64)

def not_a_module():
    return 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "my_models.py"


def test_py_model_with_an_adapter(user_module):
    import my_models

    model = load_model("py:my_models:make")
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        reference = my_models.Tiny()
        last = reference.norm(reference.tokens(x, 1)[-1])
    feats = model.extract(x, ["cls", "patch", "cls_last4"])
    assert (feats["cls"] - last[:, 0]).abs().max() < 1e-6 and (feats["patch"] - last[:, 1:]).abs().max() < 1e-6
    assert feats["cls_last4"].shape == (2, 48)  # min(4, depth = 2) blocks
    assert model.eval_config.mean == (0.5, 0.5, 0.5) and model.info.source == "py"
    assert model.info.revision.startswith("module sha256 ") and len(model.info.sha256) == 64
    assert load_model("py:my_models:make_timm").info.source == "py"  # a timm model needs no adapter
    with pytest.raises(BadInputError, match="not a torch.nn.Module"):
        load_model("py:my_models:not_a_module")
    with pytest.raises(UnknownNameError, match="no callable 'missing'"):
        load_model("py:my_models:missing")
    with pytest.raises(MissingFileError, match="cannot import"):
        load_model("py:no_such_module_here:make")


def _expected_top1(model, record) -> float:
    """The record's top-1 computed again outside the runner: the 1 % split of the embedded data, the model's
    features, MSN's per-sample preprocessing and scikit-learn's logistic regression with the same objective
    (C = 1/λ, no intercept), scored on the evaluation set."""
    from sklearn.linear_model import LogisticRegression

    from lowshot.benchmark.features import extract_features
    from lowshot.tasks.classification import LowShotClassification, embedded_data
    from lowshot.tasks.classifiers import preprocess

    setting = next(s for s in LowShotClassification.settings if s.name == "1percent")
    data = embedded_data([setting])
    rows = np.array([data.train.index_of(n) for n in data.splits[("1percent", 1)][0]])
    transform = model.transform(data.resize, data.crop)
    feature = record["feature"]
    x_train = extract_features(model, data.train, rows, transform, [feature], workers=0, progress=False)[feature]
    x_test = extract_features(model, data.test, np.arange(len(data.test)), transform, [feature], workers=0,
                              progress=False)[feature]
    y_train, y_test = np.asarray(data.train.targets)[rows], np.asarray(data.test.targets)
    assert record["num_train"] == len(rows) and record["num_test"] == len(y_test)
    clf = LogisticRegression(C=1 / record["hyperparameters"]["lambd"], fit_intercept=False, tol=1e-10,
                             max_iter=10_000).fit(preprocess(x_train), y_train)
    return 100 * float(np.mean(clf.predict(preprocess(x_test)) == y_test))


@pytest.mark.slow
def test_bench_writes_records_with_provenance_for_each_source(tmp_path, timm_file, user_module):
    hf_dir, _ = _hf_dir(tmp_path, "dinov2")
    weights, _ = timm_file
    results = tmp_path / "results"
    for model_args, source, load in [
            (["--model", "timm:vit_tiny_patch16_224", "--weights-file", str(weights)], "timm",
             lambda: load_model("timm:vit_tiny_patch16_224", weights_file=weights)),
            (["--model", f"hf:{hf_dir}"], "hf", lambda: load_model(f"hf:{hf_dir}")),
            (["--model", "py:my_models:make"], "py", lambda: load_model("py:my_models:make"))]:
        argv = ["bench", *model_args, *ONE_SPLIT, "--classifier", "logreg", "--results", str(results),
                "--cache", str(tmp_path / "cache")]
        code, out, err = lowshot(argv)
        assert code == 0, err
        paths = [p for p in results.rglob("*.json") if json.loads(p.read_text()).get("model_source") == source]
        assert len(paths) == 1, source
        r = json.loads(paths[0].read_text())
        assert r["model"] == model_args[1] and len(r["checkpoint_sha256"]) == 64 and r["method"] == source
        assert r["chance"]["value"] == 100 / 16 and r["hyperparameters"]["lambd"] == 0.075  # MSN's λ for 1 %
        assert r["metrics"]["top1"] == pytest.approx(_expected_top1(load(), r), abs=100 / r["num_test"] + 1e-9), \
            source  # at most one evaluation image decided otherwise by the other solver
        before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in results.rglob("*.json")}
        code, out, _ = lowshot(argv)
        assert code == 0 and {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in results.rglob("*.json")} == before
        assert "0 record(s) written" in out and "0 computed" in out  # a rerun computes nothing
