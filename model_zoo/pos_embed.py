"""Position-embedding resizing, each method's own rule (timm's default antialiased resize matches none).

- "dino" (DINO, iBOT): bicubic `F.interpolate` with scale_factor ((h + 0.1) / g, (w + 0.1) / g), no antialias;
  skipped when the token count matches and the input is square (DINO `interpolate_pos_encoding`).
- "msn": bicubic with one scale_factor sqrt(npatch / N), square grids only (MSN `deit.interpolate_pos_encoding`).
- "mae": size-based bicubic to (h, w), align_corners=False, no antialias; MAE applies it once at load time
  (`util/pos_embed.interpolate_pos_embed`), which gives the same tensor as applying it here per grid.
- "size_antialias": size-based bicubic with antialias=True (DINOv2 with registers: `interpolate_offset=0.0,
  interpolate_antialias=True`; it is also timm's `resample_abs_pos_embed`). Skipped as "dino".
- "dinov2" names the family's pair of rules: without registers "dino" (`interpolate_offset=0.1`, no antialias,
  the same arithmetic as DINO v1), with registers "size_antialias" (`concrete_rule`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RULES = ("dino", "msn", "mae", "size_antialias")


def concrete_rule(rule: str, num_registers: int) -> str:
    """The rule one model uses: "dinov2" depends on whether the file has registers."""
    if rule == "dinov2":
        return "size_antialias" if num_registers else "dino"
    return rule


def resize_pos_embed(pos_embed: torch.Tensor, grid_h: int, grid_w: int, rule: str) -> torch.Tensor:
    """pos_embed [1, 1 + g*g, D] (CLS first) -> [1, 1 + grid_h*grid_w, D] by `rule`."""
    if rule not in RULES:
        raise ValueError(f"unknown position-embedding rule {rule!r}; known: {RULES}")
    n = pos_embed.shape[1] - 1
    g = math.isqrt(n)
    npatch = grid_h * grid_w
    same = npatch == n and (rule == "msn" or grid_h == grid_w)
    if same:
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    grid = patch_pos.reshape(1, g, g, dim).permute(0, 3, 1, 2)
    if rule == "dino":
        grid = F.interpolate(grid, scale_factor=((grid_h + 0.1) / g, (grid_w + 0.1) / g), mode="bicubic")
    elif rule == "msn":
        if grid_h != grid_w:
            raise ValueError(f"MSN's position-embedding rule supports square inputs only, got a "
                             f"{grid_h}x{grid_w} patch grid")
        grid = F.interpolate(grid, scale_factor=math.sqrt(npatch / n), mode="bicubic")
    else:
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=False,
                             antialias=rule == "size_antialias")
    if grid.shape[-2:] != (grid_h, grid_w):
        raise RuntimeError(f"{rule} rule produced a {tuple(grid.shape[-2:])} grid for {grid_h}x{grid_w}")
    patch_pos = grid.permute(0, 2, 3, 1).reshape(1, npatch, dim)
    return torch.cat([cls_pos, patch_pos], dim=1)
