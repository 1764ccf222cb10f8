"""Loss terms shared by the recipes: soft cross-entropy between assignments, and pixel reconstruction."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .masking import patchify


def soft_cross_entropy(targets: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """-sum_k t_k log softmax(s / temperature)_k, per sample (all leading dimensions kept)."""
    return -(targets * F.log_softmax(student_logits.float() / temperature, dim=-1)).sum(-1)


def cross_view_distillation(teacher_probs: list[torch.Tensor], student_logits: list[torch.Tensor],
                            temperature: float, skip_same_view: bool = True) -> torch.Tensor:
    """DINO's multi-view loss: every student view predicts every teacher view (teacher views come first in
    the student's list; the same view is skipped when the student sees it unmasked)."""
    terms = [soft_cross_entropy(t, s, temperature).mean()
             for i, t in enumerate(teacher_probs) for j, s in enumerate(student_logits)
             if not (skip_same_view and i == j)]
    return torch.stack(terms).mean()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked positions of each image [B, N], then over images (iBOT's patch loss)."""
    mask = mask.to(values.dtype)
    return ((values * mask).sum(1) / mask.sum(1).clamp_min(1.0)).mean()


def masked_patch_distillation(teacher_probs: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor,
                              temperature: float) -> torch.Tensor:
    return masked_mean(soft_cross_entropy(teacher_probs, student_logits, temperature), mask)


def pixel_targets(images: torch.Tensor, patch_size: int, normalise: bool) -> torch.Tensor:
    """Per-patch pixel targets [B, N, p * p * 3]; MAE's norm_pix_loss standardises each patch."""
    target = patchify(images, patch_size)
    if normalise:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    return target


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return masked_mean((pred.float() - target).abs().mean(-1), mask)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return masked_mean((pred.float() - target).pow(2).mean(-1), mask)
