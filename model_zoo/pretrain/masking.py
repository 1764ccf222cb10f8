"""Which patches a student does not see, and what it sees instead.

`block_mask` (BEiT / GMML style): rectangles of patches of random area and aspect until exactly
round(ratio * N) patches are masked. `random_mask` (MAE / MSN): a uniformly random subset, returned with the
indices of the kept patches. `corrupt` replaces masked patches in pixel space (GMML): by noise, by the same
patches of another image of the batch, or by either per image. All randomness comes from the generator passed.
"""
from __future__ import annotations

import math

import torch


def _uniform(g: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * torch.rand((), generator=g).item()


def _randint(g: torch.Generator, high: int) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (), generator=g).item())


def block_mask(batch: int, grid_h: int, grid_w: int, ratio: float, generator: torch.Generator,
               min_block: int = 4, max_aspect: float = 3.0, tries: int = 10) -> torch.Tensor:
    """bool [batch, grid_h * grid_w]: exactly round(ratio * N) patches per image, mostly in blocks."""
    n = grid_h * grid_w
    target = int(round(ratio * n))
    masks = torch.zeros(batch, grid_h, grid_w, dtype=torch.bool)
    log_aspect = (-math.log(max_aspect), math.log(max_aspect))
    for mask in masks:
        count, failures = 0, 0
        while count < target and target - count >= min_block and failures < tries:
            area = _uniform(generator, min_block, target - count)
            aspect = math.exp(_uniform(generator, *log_aspect))
            h = min(grid_h, max(1, int(round(math.sqrt(area * aspect)))))
            w = min(grid_w, max(1, int(round(math.sqrt(area / aspect)))))
            top, left = _randint(generator, grid_h - h + 1), _randint(generator, grid_w - w + 1)
            new = int((~mask[top:top + h, left:left + w]).sum())
            if new == 0 or count + new > target:
                failures += 1
                continue
            mask[top:top + h, left:left + w] = True
            count, failures = count + new, 0
        if count < target:  # the last few patches (fewer than a block) one by one
            free = (~mask).flatten().nonzero().squeeze(1)
            pick = free[torch.randperm(len(free), generator=generator)[:target - count]]
            mask.view(-1)[pick] = True
    return masks.flatten(1)


def random_mask(batch: int, n: int, ratio: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask bool [batch, n], keep long [batch, n_keep] sorted) with exactly round(ratio * n) masked."""
    n_keep = n - int(round(ratio * n))
    order = torch.rand(batch, n, generator=generator).argsort(dim=1)
    keep = order[:, :n_keep].sort(dim=1).values
    mask = torch.ones(batch, n, dtype=torch.bool).scatter_(1, keep, False)
    return mask, keep


def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N, p * p * C], patches in row-major order, pixels (row, col, channel) as MAE."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    b, _, _ = patches.shape
    c = patches.shape[-1] // (p * p)
    x = patches.reshape(b, h // p, w // p, p, p, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


def corrupt(images: torch.Tensor, mask: torch.Tensor, p: int, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Images with the masked patches replaced in pixel space (GMML). mode: noise, other_image,
    noise+other_image (a coin per image). Noise is standard normal, the range of normalised pixels."""
    b, _, h, w = images.shape
    noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
    other = images.roll(1, dims=0)  # image i takes its patches from image i - 1
    if mode == "noise":
        fill = noise
    elif mode == "other_image":
        fill = other
    elif mode == "noise+other_image":
        coin = (torch.rand(b, generator=generator) < 0.5).to(images.device).view(b, 1, 1, 1)
        fill = torch.where(coin, noise, other)
    else:
        raise ValueError(f"unknown pixel corruption {mode!r}")
    pixel_mask = mask.to(images.device).view(b, 1, h // p, w // p)
    pixel_mask = pixel_mask.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)
    return torch.where(pixel_mask, fill, images)
