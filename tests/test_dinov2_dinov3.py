"""DINOv2 and DINOv3 beyond the official fixtures: other sizes (depth, width, heads, registers, SwiGLU) through the
unchanged loader, checked against timm's own forward of the same weights; the registry and release-name checks."""
from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch
from timm.layers import SwiGLUPacked
from timm.models.vision_transformer import VisionTransformer

from lowshot.model_zoo import REGISTRY, load_model
from lowshot.model_zoo.download import ChecksumError
from lowshot.model_zoo.errors import MissingFileError
from lowshot.model_zoo.formats import Architecture, detect_layout
from lowshot.model_zoo.registry import ModelEntry, register
from lowshot.model_zoo.release_files import dinov3_eva, learned_pos_vit
from lowshot.model_zoo.safe_load import CheckpointError


def _perturb(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():  # non-trivial values everywhere (timm zero-inits tokens and biases)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("registers,swiglu", [(0, False), (2, False), (3, True)])
def test_dinov2_other_sizes_match_timm(tmp_path, registers, swiglu):
    """Width 40, depth 3, 5 heads (head_dim 8), patch 7, grid 5; timm's DINOv2 models as the reference."""
    kwargs = dict(mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU, mlp_ratio=2 * 2.5) if swiglu else {}
    timm_vit = _perturb(VisionTransformer(img_size=35, patch_size=7, embed_dim=40, depth=3, num_heads=5, init_values=1.0,
                                          reg_tokens=registers, no_embed_class=bool(registers), num_classes=0,
                                          dynamic_img_size=True, **kwargs), seed=registers)
    sd = dict(timm_vit.state_dict())
    if registers:  # timm keeps no CLS position; DINOv2 stores one, and its registers get none
        sd["register_tokens"] = sd.pop("reg_token")
        sd["pos_embed"] = torch.cat([torch.zeros(1, 1, 40), sd["pos_embed"]], dim=1)
    if swiglu:
        sd = {k.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3."): v for k, v in sd.items()}
    path = tmp_path / "dinov2_custom_pretrain.pth"
    torch.save({**sd, "mask_token": torch.zeros(1, 40)}, path)
    assert detect_layout(torch.load(path)) == "dinov2"
    model = load_model(path, method="dinov2", num_heads=5)
    assert model.info.arch.num_registers == registers and model.info.arch.ffn == ("swiglu_packed" if swiglu else "mlp")
    sizes = [(35, 35)] + ([(49, 28)] if registers else [])  # registers: timm's resize is DINOv2's rule
    for h, w in sizes:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            tokens = timm_vit.forward_features(x)
        p = 1 + registers
        feats = model.extract(x, ["cls", "patch", "registers"] if registers else ["cls", "patch"])
        assert (feats["cls"] - tokens[:, 0]).abs().max() < 1e-5
        assert (feats["patch"] - tokens[:, p:]).abs().max() < 1e-5
        if registers:
            assert (feats["registers"] - tokens[:, 1:p]).abs().max() < 1e-5
        avg = model.extract(x, ["cls_avgpool"])["cls_avgpool"]
        assert torch.allclose(avg, torch.cat([tokens[:, 0], tokens[:, p:].mean(1)], -1), atol=1e-5)


def _dinov3_release(eva, dim: int, k_bias: bool) -> dict:
    """timm Eva weights in the DINOv3 release layout (the inverse of the loader's mapping); periods in bf16."""
    out = {"rope_embed.periods": eva.rope.periods.to(torch.bfloat16), "mask_token": torch.zeros(1, dim)}
    for k, v in eva.state_dict().items():
        if k.endswith(".attn.q_bias"):
            base = k.removesuffix("q_bias")
            k_part = torch.randn(dim) if k_bias else torch.zeros(dim)  # masked off by bias_mask
            out[base + "qkv.bias"] = torch.cat([v, k_part, eva.state_dict()[base + "v_bias"]])
            out[base + "qkv.bias_mask"] = torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
            continue
        if k.endswith(".attn.v_bias") or k.endswith(".attn.k_bias"):
            continue
        for new, old in [(".ls1.gamma", ".gamma_1"), (".ls2.gamma", ".gamma_2"), (".mlp.w1.", ".mlp.fc1_g."),
                         (".mlp.w2.", ".mlp.fc1_x."), (".mlp.w3.", ".mlp.fc2.")]:
            k = k.replace(old, new)
        out["storage_tokens" if k == "reg_token" else k] = v
    return out


@pytest.mark.parametrize("heads,registers,swiglu", [(2, 4, False), (4, 2, True)])
def test_dinov3_other_sizes_match_timm(tmp_path, heads, registers, swiglu):
    """Width 64, depth 3, 2 or 4 heads, 2 or 4 storage tokens, MLP or SwiGLU; square and non-square inputs."""
    arch = Architecture(64, 3, 16, 0, 3.0 if swiglu else 4.0, True, num_registers=registers, layer_scale=True,
                        ffn="swiglu" if swiglu else "mlp", position="rope")
    eva = _perturb(dinov3_eva(arch, heads), seed=heads)
    eva.rope.periods.copy_(eva.rope.periods.to(torch.bfloat16).float())  # the reference uses the stored values
    path = tmp_path / "dinov3_custom.pth"
    torch.save(_dinov3_release(eva, 64, k_bias=True), path)
    assert detect_layout(torch.load(path)) == "dinov3"
    model = load_model(path, method="dinov3")  # num_heads from the stored RoPE periods
    assert model.info.num_heads == heads and model.num_registers == registers
    for h, w in [(48, 48), (32, 80)]:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            tokens = eva.forward_features(x)
        p = 1 + registers
        feats = model.extract(x, ["cls", "patch", "registers", "cls_last4_avgpool"])
        assert (feats["cls"] - tokens[:, 0]).abs().max() < 1e-5
        assert (feats["patch"] - tokens[:, p:]).abs().max() < 1e-5
        assert (feats["registers"] - tokens[:, 1:p]).abs().max() < 1e-5
        assert feats["cls_last4_avgpool"].shape == (2, 4 * 64)  # 3 blocks' CLS + the mean patch token
    with pytest.raises(CheckpointError, match="num_heads"):
        load_model(path, method="dinov3", num_heads=heads * 2)


def test_dinov3_without_bias_mask_refuses_a_k_bias(tmp_path):
    arch = Architecture(64, 1, 16, 0, 4.0, True, num_registers=1, layer_scale=True, position="rope")
    sd = _dinov3_release(_perturb(dinov3_eva(arch, 4), 0), 64, k_bias=True)
    del sd["blocks.0.attn.qkv.bias_mask"]
    torch.save(sd, tmp_path / "d3.pth")
    with pytest.raises(CheckpointError, match="non-zero K bias"):
        load_model(tmp_path / "d3.pth", method="dinov3")


@pytest.mark.parametrize("name", ["dinov2-vits14-reg4", "dinov2-vitg14", "dinov3-vits16plus", "dinov3-vit7b16"])
def test_registry_parameter_counts_match_the_built_architecture(name):
    e = REGISTRY[name]
    hidden = e.mlp_hidden or 4 * e.embed_dim
    arch = Architecture(e.embed_dim, e.depth, e.patch_size, 0 if e.rope else e.img_size // e.patch_size,
                        hidden / e.embed_dim, e.qkv_bias, e.num_registers, e.layer_scale, e.ffn,
                        "rope" if e.rope else "learned")
    with torch.device("meta"):
        module = dinov3_eva(arch, e.num_heads) if e.rope else learned_pos_vit(arch, e.num_heads)
    # DINOv2's registers live beside the timm module; DINOv3's masked K bias is in the file, not a timm parameter
    beside = e.embed_dim * (e.depth if e.rope and e.qkv_bias else 0 if e.rope else e.num_registers)
    assert sum(p.numel() for p in module.parameters()) + beside == e.num_params


def test_dinov3_release_without_url(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWSHOT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MissingFileError, match="licence form .*dinov3-downloads.*--weights-file"):
        load_model("dinov3-vits16")
    fixture = tmp_path / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"
    arch = Architecture(384, 1, 16, 0, 4.0, True, num_registers=4, layer_scale=True, position="rope")
    torch.save(_dinov3_release(dinov3_eva(arch, 6), 384, k_bias=False), fixture)
    with pytest.raises(ChecksumError, match="08c60483"):  # not the release: its sha256 does not start so
        load_model("dinov3-vits16", weights_file=fixture)
    digest = __import__("lowshot.model_zoo.download", fromlist=["sha256_file"]).sha256_file(fixture)
    entry = register(replace(REGISTRY["dinov3-vits16"], name="dinov3-test", depth=1,
                             release_file=f"dinov3_test-{digest[:8]}.pth"))
    try:
        model = load_model("dinov3-test", weights_file=fixture)
        assert model.info.sha256 == digest and model.info.source == "registry" and model.info.name == "dinov3-test"
        (tmp_path / "cache").mkdir()
        shutil.copy(fixture, tmp_path / "cache" / entry.release_file)  # found in the cache under its release name
        assert load_model("dinov3-test").info.sha256 == digest
    finally:
        del REGISTRY["dinov3-test"]
