"""The ViT being trained: a plain timm `VisionTransformer`, run token-wise so that recipes can mask it.

`encode` is the forward pass `FeatureExtractor` reproduces at evaluation (patch embed, CLS, position
embedding, blocks, final norm), with two optional inputs: `token_mask` replaces masked patch embeddings by a
learned mask token (iBOT), `keep` drops all but the listed patches (MAE / MSN). Crops smaller than the
training size (local views) use the position embedding resized bicubically, as DINO does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from .config import PretrainConfig


def build_vit(cfg: PretrainConfig) -> VisionTransformer:
    vit = VisionTransformer(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                            depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=4.0, qkv_bias=True,
                            class_token=True, global_pool="token", num_classes=0, drop_path_rate=cfg.drop_path)
    vit.patch_embed.strict_img_size = False  # local crops are smaller
    return vit


def pos_embed_for(vit: VisionTransformer, grid_h: int, grid_w: int) -> torch.Tensor:
    pos = vit.pos_embed
    n = pos.shape[1] - 1
    side = int(round(n ** 0.5))
    if (grid_h, grid_w) == (side, side):
        return pos
    patch = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)], dim=1)


def encode(vit: VisionTransformer, images: torch.Tensor, token_mask: torch.Tensor | None = None,
           mask_token: torch.Tensor | None = None, keep: torch.Tensor | None = None,
           prenorm: bool = False) -> torch.Tensor:
    """Tokens [B, 1 + n, D] after the final norm (or before it with prenorm=True).

    token_mask: bool [B, N] patches to replace by mask_token [1, 1, D]; keep: long [B, n] patch indices to keep.
    """
    b, _, h, w = images.shape
    p = vit.patch_embed.patch_size[0]
    x = vit.patch_embed(images)
    if token_mask is not None:
        x = torch.where(token_mask.unsqueeze(-1), mask_token.to(x.dtype).expand_as(x), x)
    pos = pos_embed_for(vit, h // p, w // p)
    x = x + pos[:, 1:]
    if keep is not None:
        x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    x = torch.cat([(vit.cls_token + pos[:, :1]).expand(b, -1, -1), x], dim=1)
    x = vit.blocks(x)
    return x if prenorm else vit.norm(x)
