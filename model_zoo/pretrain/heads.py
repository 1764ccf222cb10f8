"""Heads on top of the backbone: clustering layers, a pixel reconstruction head and MAE's light decoder.

`ClusteringHead` is DINO's head with a normalised last layer, which is MSN's prototype layer too: an MLP
projects a token to an l2-normalised bottleneck, and the logits are its cosine similarities with K
learnable, l2-normalised prototypes (the temperature is applied by the loss). MaskCluster's CL_s / CL_t
(CLS) and PL_s / PL_t (patch tokens) are instances of it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block



def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ClusteringHead(nn.Module):
    def __init__(self, in_dim: int, num_prototypes: int, hidden: int = 512, bottleneck: int = 128, layers: int = 3):
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [bottleneck]
        mlp = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            mlp.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                mlp.append(nn.GELU())
        self.mlp = nn.Sequential(*mlp)
        self.prototypes = nn.Parameter(torch.empty(num_prototypes, bottleneck))
        self.apply(_init_linear)
        trunc_normal_(self.prototypes, std=0.02)

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(tokens), dim=-1)

    def assign(self, z: torch.Tensor, prototypes: torch.Tensor | None = None) -> torch.Tensor:
        """Cosine logits of normalised embeddings z against the prototypes (this head's unless given)."""
        protos = self.prototypes if prototypes is None else prototypes
        return z @ F.normalize(protos, dim=-1).t()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.assign(self.project(tokens))


class PixelHead(nn.Module):
    """Patch token -> its p x p x 3 pixels (MaskCluster's reconstruction head, GMML's is as light)."""

    def __init__(self, in_dim: int, patch_size: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, patch_size * patch_size * 3))
        self.apply(_init_linear)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        return self.net(patch_tokens)


class MAEDecoder(nn.Module):
    """MAE's decoder: visible tokens + mask tokens at their positions -> pixels of every patch."""

    def __init__(self, in_dim: int, num_patches: int, patch_size: int, dim: int = 64, depth: int = 2, heads: int = 4):
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, patch_size * patch_size * 3)
        self.apply(_init_linear)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor, num_patches: int) -> torch.Tensor:
        """tokens [B, 1 + n_keep, D] from the encoder, keep [B, n_keep] -> pixels [B, N, p * p * 3]."""
        x = self.embed(tokens)
        b, _, d = x.shape
        full = self.mask_token.to(x.dtype).expand(b, num_patches, d).clone()
        full = full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, d), x[:, 1:])
        x = torch.cat([x[:, :1], full], dim=1) + self.pos_embed
        return self.pred(self.norm(self.blocks(x)))[:, 1:]

