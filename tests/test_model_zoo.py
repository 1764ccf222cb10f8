"""Loader behaviour beyond the official fixtures: other sizes, every layout, bad input, the registry."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from lowshot.model_zoo import REGISTRY, load_model
from lowshot.model_zoo.formats import LAYOUTS, detect_layout
from lowshot.model_zoo.pos_embed import resize_pos_embed
from lowshot.model_zoo.safe_load import CheckpointError, UnsafeCheckpointError



def _vit(embed_dim=64, depth=5, heads=4, patch=8, img=32, seed=0):
    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=img, patch_size=patch, embed_dim=embed_dim, depth=depth, num_heads=heads,
                            num_classes=0).eval()
    with torch.no_grad():  # non-trivial values everywhere (timm zero-inits cls_token and biases)
        for p in vit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vit


def _save_in_layout(sd: dict, layout: str, path, student: dict):
    """Wrap a timm backbone state dict the way each release layout stores it."""
    head = {"head.mlp.0.weight": torch.zeros(8, 4), "head.last_layer.weight_g": torch.ones(16, 1)}
    pre = lambda d, p: {p + k: v for k, v in d.items()}  # noqa: E731
    obj = {
        "dino_backbone": lambda: dict(sd),
        "dino_full": lambda: {"teacher": {**pre(sd, "backbone."), **head},
                              "student": {**pre(student, "module.backbone."), **pre(head, "module.")},
                              "epoch": 3, "args": argparse.Namespace(arch="vit_small"), "dino_loss": {"center": torch.zeros(1, 16)}},
        "ibot_teacher": lambda: {"state_dict": dict(sd)},
        "ibot_teacher_with_head": lambda: {"state_dict": {**sd, **head}},
        "ibot_full": lambda: {"teacher": {**pre(sd, "backbone."), **head},
                              "student": {**pre(student, "module.backbone."), "module.backbone.masked_embed": torch.zeros(1, 64)},
                              "ibot_loss": {"center": torch.zeros(1, 16)}, "args": argparse.Namespace(lr=0.1)},
        "mae_encoder": lambda: {"model": dict(sd)},
        "mae_full": lambda: {"model": {**sd, "mask_token": torch.zeros(1, 1, 8), "decoder_embed.weight": torch.zeros(8, 64)}},
        "msn": lambda: {"target_encoder": {**pre(sd, "module."), "module.fc.fc1.weight": torch.zeros(8, 64),
                                           "module.fc.bn1.running_mean": torch.zeros(8)},
                        "encoder": pre(student, "module."), "prototypes": torch.zeros(4, 8), "epoch": 1},
    }[layout]()
    torch.save(obj, path)


@pytest.mark.parametrize("layout", [l for l in LAYOUTS if l not in ("lowshot", "dinov2", "dinov3")])  # v2, v3: own tests
def test_other_sizes_every_layout(tmp_path, layout):
    """Depth 5, width 64, 4 heads, patch 8: same loader, unchanged; teacher vs student picked correctly."""
    method = layout.split("_")[0]
    teacher, student = _vit(seed=0), _vit(seed=1)
    path = tmp_path / f"{layout}.pth"
    _save_in_layout(teacher.state_dict(), layout, path, student.state_dict())
    assert detect_layout(torch.load(path, weights_only=False)) == layout
    model = load_model(path, method=method, num_heads=4)
    assert model.info.layout == layout and model.info.arch.depth == 5 and model.info.arch.patch_size == 8
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = teacher.forward_features(x)  # timm's own forward: normed tokens at the native size
    feats = model.extract(x, ["cls", "patch", "cls_last4", "cls_prenorm"])
    assert torch.allclose(feats["cls"], tokens[:, 0], atol=1e-5)
    assert torch.allclose(feats["patch"], tokens[:, 1:], atol=1e-5)
    assert feats["cls_last4"].shape == (2, 4 * 64)
    assert torch.allclose(feats["cls_last4"][:, -64:], tokens[:, 0], atol=1e-5)
    assert not torch.allclose(feats["cls_prenorm"], tokens[:, 0], atol=1e-3)
    if LAYOUTS[layout].student_key:
        with torch.no_grad():
            s_tokens = student.forward_features(x)
        s = load_model(path, method=method, num_heads=4, weights="student").extract(x, ["cls"])["cls"]
        assert torch.allclose(s, s_tokens[:, 0], atol=1e-5)
    else:
        with pytest.raises(ValueError, match="one encoder only"):
            load_model(path, method=method, num_heads=4, weights="student")
    # A larger input works through the method's pos-embed rule.
    assert model.extract(torch.randn(1, 3, 48, 48), ["patch"])["patch"].shape == (1, 36, 64)


def test_pos_embed_rules_differ_and_keep_identity():
    pos = torch.randn(1, 1 + 16, 8)
    for rule in ("dino", "msn", "mae"):
        assert resize_pos_embed(pos, 4, 4, rule) is pos
    dino, msn, mae = (resize_pos_embed(pos, 6, 6, r) for r in ("dino", "msn", "mae"))
    assert dino.shape == msn.shape == mae.shape == (1, 37, 8)
    assert torch.allclose(msn, mae, atol=1e-6)  # exact ratio: one scale factor == size-based
    assert (dino - mae).abs().max() > 1e-3  # the +0.1 offset moves the sampling positions
    with pytest.raises(ValueError, match="square"):
        resize_pos_embed(pos, 4, 6, "msn")


def test_num_heads_required_for_files(tmp_path):
    path = tmp_path / "b.pth"
    torch.save(_vit().state_dict(), path)
    with pytest.raises(ValueError, match="num_heads"):
        load_model(path, method="dino")
    with pytest.raises(ValueError, match="method"):
        load_model(path, num_heads=4)


def test_bad_inputs(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model": _vit().state_dict()}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        load_model(truncated, method="mae", num_heads=4)
    garbage = tmp_path / "random.pth"
    rng = np.random.default_rng(0)
    for _ in range(50):  # random bytes break the unpickler in many ways (once an IndexError escaped)
        garbage.write_bytes(rng.bytes(int(rng.integers(1, 4096))))
        with pytest.raises(CheckpointError, match="random.pth") as error:
            load_model(garbage, method="mae", num_heads=4)
        assert "weights_only" not in str(error.value)  # never torch's advice to load unsafely
    with pytest.raises(FileNotFoundError, match="checkpoint file .*nope/x.pth not found"):
        load_model(tmp_path / "nope" / "x.pth", method="mae", num_heads=4)
    with pytest.raises(KeyError, match="unknown model 'dino-vits17'"):  # a name, not a path: the registry's
        load_model("dino-vits17")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_model(tmp_path, method="mae", num_heads=4)


class Foreign:  # a global outside the allow-list
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_foreign_pickle_refused_unless_trusted(tmp_path):
    path = tmp_path / "evil.pth"
    sd = _vit().state_dict()
    torch.save({"model": sd, "extra": Foreign()}, path)
    with pytest.raises(UnsafeCheckpointError, match="allow-list"):
        load_model(path, method="mae", num_heads=4)
    model = load_model(path, method="mae", num_heads=4, trust=True)
    assert model.info.arch.depth == 5
    # argparse.Namespace (DINO/iBOT full checkpoints) is allowed without trust.
    ok = tmp_path / "args.pth"
    torch.save({"teacher": {"backbone." + k: v for k, v in sd.items()}, "student": {}, "args": argparse.Namespace(a=1)}, ok)
    assert load_model(ok, method="dino", num_heads=4).info.layout == "dino_full"


def test_wrong_architecture_lists_keys(tmp_path, monkeypatch):
    """A registry entry whose file holds another architecture is refused with the offending keys."""
    entry = REGISTRY["dino-vits16"]
    small = _vit(embed_dim=64, depth=2, heads=4, patch=16, img=224)
    cache = tmp_path / "cache"
    monkeypatch.setenv("LOWSHOT_CACHE", str(cache))
    cache.mkdir()
    torch.save(small.state_dict(), cache / entry.file_name)  # placed by hand, as the offline message suggests
    with pytest.raises(CheckpointError) as e:
        load_model("dino-vits16")
    msg = str(e.value)
    assert "missing" in msg and "blocks.2." in msg and "mis-shaped" in msg and "cls_token" in msg


def test_unknown_layout_keys_are_refused(tmp_path):
    sd = {"model": {**_vit().state_dict(), "surprise.weight": torch.zeros(2)}}
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="surprise.weight"):
        load_model(path, method="mae", num_heads=4)


def test_registry_entries_are_complete():
    methods = {e.method for e in REGISTRY.values()}
    assert {"dino", "ibot", "mae", "msn", "dinov2", "dinov3"} <= methods
    for e in REGISTRY.values():
        assert e.url or e.bundled or (e.release_file and e.get_it.startswith("https://"))
        assert e.layout in LAYOUTS
        assert e.embed_dim % e.num_heads == 0
        assert e.lowshot_feature in ("cls", "cls_prenorm")
        assert e.eval_config.knn_feature == "cls"  # DINO's eval_knn protocol, for every method (MSN included)
    assert REGISTRY["msn-vits16"].lowshot_feature == "cls_prenorm"
    dino, msn = REGISTRY["dino-vitb16"].eval_config, REGISTRY["msn-vitb16"].eval_config
    assert dino.interpolation == "bicubic" and msn.interpolation == "bilinear"
    # parameter counts agree with timm for a real architecture
    vit = VisionTransformer(embed_dim=384, depth=12, num_heads=6, num_classes=0)
    assert REGISTRY["dino-vits16"].num_params == sum(p.numel() for p in vit.parameters())


def test_cli_models_lists_zoo(capsys):
    import re

    from lowshot.benchmark.cli import main
    from lowshot.model_zoo.download import cache_dir

    def table():
        assert main(["models"]) == 0
        lines = capsys.readouterr().out.strip().split("\n\n")[0].splitlines()  # the registry (then: families)
        header = re.split(r"\s{2,}", lines[0])
        return {cells[0]: dict(zip(header, cells)) for cells in (re.split(r"\s{2,}", ln) for ln in lines[1:])}

    rows = table()
    assert set(rows) == set(REGISTRY)  # every entry, one row each
    assert rows["msn-vits16"]["lowshot feature"] == "cls_prenorm" and rows["msn-vits16"]["k-NN feature"] == "cls"
    assert rows["msn-vitl7"]["cached"] == "no" and rows["msn-tiny"]["cached"] == "bundled"
    assert rows["ibot-vitb16"]["source"] == REGISTRY["ibot-vitb16"].url
    assert rows["dinov3-vitb16"]["source"].startswith("after a licence form: https://")
    (cache_dir() / REGISTRY["msn-vitl7"].file_name).parent.mkdir(parents=True, exist_ok=True)
    (cache_dir() / REGISTRY["msn-vitl7"].file_name).write_bytes(b"downloaded")
    assert table()["msn-vitl7"]["cached"] == "yes"  # the column reads the cache

