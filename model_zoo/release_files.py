"""A release file's backbone state dict -> the timm module that computes its official features.

The architecture comes from the file (`formats.infer_architecture`), num_heads from the caller. Three shapes:
- learned pos_embed, no layer scale / registers (DINO, iBOT, MAE, MSN, this project's models): timm
  `VisionTransformer`, run with the method's position rule;
- DINOv2: the same with layer scale (`ls1.gamma` is timm's name), SwiGLU for ViT-g (`w12` / `w3` = timm's
  packed `fc1` / `fc2`), LayerNorm eps 1e-6 and the registers inserted after the position embedding;
- DINOv3: timm `Eva` with RoPE, layer scale, LayerNorm eps 1e-5, q and v bias (the release masks the K bias off
  with `attn.qkv.bias_mask`), SwiGLU for the "plus" and 7B models, and the RoPE periods the file stores (in
  bf16; timm recomputes them in fp32, which moves the features by up to 5e-4).
"""
from __future__ import annotations

from functools import partial

import torch
from timm.layers import LayerNorm, SwiGLUPacked
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer

from .backbones import Backbone, RopeViTBackbone, ViTBackbone
from .formats import Architecture, check_fits
from .pos_embed import concrete_rule
from .safe_load import CheckpointError


def build_backbone(arch: Architecture, num_heads: int, sd: dict, pos_embed_rule: str, source: str) -> Backbone:
    """The loaded backbone; CheckpointError naming `source` and its keys when the file does not fit."""
    if arch.embed_dim % num_heads:
        raise CheckpointError(f"num_heads={num_heads} does not divide embed_dim={arch.embed_dim}")
    if arch.position == "rope":
        return _rope_vit(arch, num_heads, sd, source)
    if pos_embed_rule == "rope":
        raise CheckpointError(f"{source} has a learned pos_embed; the dinov3 rules (RoPE) do not apply to it")
    sd = dict(sd)
    registers = sd.pop("register_tokens", None)
    if arch.ffn == "swiglu_packed":
        sd = {k.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2."): v for k, v in sd.items()}
    elif arch.ffn != "mlp":
        raise CheckpointError(f"{source}: a {arch.ffn} FFN with a learned pos_embed is not a known release")
    vit = learned_pos_vit(arch, num_heads)
    _load(vit, sd, source)
    if registers is not None:
        registers = registers.float()
    return ViTBackbone(vit, concrete_rule(pos_embed_rule, arch.num_registers), registers)


def mlp_ratio(hidden: int, dim: int) -> float:
    """A ratio timm turns back into exactly `hidden` (it computes int(dim * ratio))."""
    return (hidden + 0.5) / dim


def learned_pos_vit(arch: Architecture, num_heads: int) -> VisionTransformer:
    """timm VisionTransformer of a learned-pos_embed release (registers are held by ViTBackbone, not here)."""
    hidden = round(arch.mlp_ratio * arch.embed_dim)
    kwargs = {}
    if arch.ffn == "swiglu_packed":  # GluMlp(fc1: 2*hidden, SiLU gate first, fc2: hidden)
        hidden *= 2
        kwargs = dict(mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU)
    return VisionTransformer(img_size=arch.img_size, patch_size=arch.patch_size, embed_dim=arch.embed_dim,
                             depth=arch.depth, num_heads=num_heads, mlp_ratio=mlp_ratio(hidden, arch.embed_dim),
                             qkv_bias=arch.qkv_bias, init_values=1.0 if arch.layer_scale else None,
                             class_token=True, global_pool="token", num_classes=0, **kwargs)


def _rope_vit(arch: Architecture, num_heads: int, sd: dict, source: str) -> RopeViTBackbone:
    head_dim = arch.embed_dim // num_heads
    periods = sd["rope_embed.periods"]
    if periods.numel() != head_dim // 4:
        heads = arch.embed_dim // (4 * periods.numel())
        raise CheckpointError(f"{source}: rope_embed.periods has {periods.numel()} entries, so head_dim is "
                              f"{4 * periods.numel()} and num_heads {heads}; num_heads={num_heads} gives head_dim "
                              f"{head_dim}")
    eva = dinov3_eva(arch, num_heads)
    _load(eva, _dinov3_to_eva(sd, arch.embed_dim, source), source)
    eva.rope.periods.copy_(periods.float())  # non-persistent in timm: the stored values, not fp32 recomputed ones
    return RopeViTBackbone(eva)


def dinov3_eva(arch: Architecture, num_heads: int) -> Eva:
    """timm's DINOv3 architecture (`vit_*_dinov3_qkvb`) at the file's sizes, CLS pooling, no head."""
    hidden = round(arch.mlp_ratio * arch.embed_dim)
    return Eva(img_size=224, patch_size=arch.patch_size, embed_dim=arch.embed_dim, depth=arch.depth,
               num_heads=num_heads, qkv_bias=arch.qkv_bias, mlp_ratio=mlp_ratio(hidden, arch.embed_dim),
               swiglu_mlp=arch.ffn == "swiglu", swiglu_align_to=1 if arch.ffn == "swiglu" else 0,
               init_values=1e-5, rope_type="dinov3", rope_temperature=100, rope_rotate_half=True,
               use_rot_pos_emb=True, use_abs_pos_emb=False, num_reg_tokens=arch.num_registers, use_fc_norm=False,
               norm_layer=partial(LayerNorm, eps=1e-5), dynamic_img_size=True, global_pool="token", num_classes=0)


def _dinov3_to_eva(sd: dict, dim: int, source: str) -> dict:
    """DINOv3 release names -> timm Eva names; the K bias is checked to be masked, then dropped."""
    out = {}
    names = [(".ls1.gamma", ".gamma_1"), (".ls2.gamma", ".gamma_2"), (".mlp.w1.", ".mlp.fc1_g."),
             (".mlp.w2.", ".mlp.fc1_x."), (".mlp.w3.", ".mlp.fc2.")]
    masked = torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
    for k, v in sd.items():
        if k == "rope_embed.periods" or k.endswith(".attn.qkv.bias_mask"):
            continue
        if k == "storage_tokens":
            k = "reg_token"
        for old, new in names:
            k = k.replace(old, new)
        if k.endswith(".attn.qkv.bias"):
            mask = sd.get(k + "_mask")
            k_bias = v[dim:2 * dim]
            if mask is not None and not torch.equal(mask.float(), masked):
                raise CheckpointError(f"{source}: {k}_mask is not the K-masking pattern [1]*D + [0]*D + [1]*D")
            if mask is None and k_bias.abs().max() > 0:
                raise CheckpointError(f"{source}: {k} has a non-zero K bias and no bias_mask; the DINOv3 "
                                      "architecture applies no K bias")
            out[k.replace("qkv.bias", "q_bias")], out[k.replace("qkv.bias", "v_bias")] = v[:dim], v[2 * dim:]
            continue
        out[k] = v
    return out


def _load(model: torch.nn.Module, sd: dict, source: str) -> None:
    check_fits(model, sd, source)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
