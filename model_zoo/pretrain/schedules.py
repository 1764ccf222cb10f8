"""Per-step schedules (pure functions of the step, so a resumed run follows them exactly) and the EMA update."""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def cosine(start: float, end: float, step: int, total: int, warmup: int = 0, warmup_start: float = 0.0) -> float:
    """Linear warm-up from warmup_start to start over `warmup` steps, then cosine from start to end."""
    if step < warmup:
        return warmup_start + (start - warmup_start) * step / warmup
    t = (step - warmup) / max(1, total - warmup)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def linear_warmup(start: float, end: float, step: int, warmup: int) -> float:
    return end if step >= warmup else start + (end - start) * step / warmup


def step_values(cfg, step: int) -> dict:
    """Learning rate, weight decay, teacher momentum and teacher temperature at `step`."""
    return {
        "lr": cosine(cfg.lr, cfg.min_lr, step, cfg.steps, cfg.warmup_steps),
        "weight_decay": cosine(cfg.weight_decay, cfg.weight_decay_end, step, cfg.steps),
        "momentum": cosine(cfg.momentum_teacher, 1.0, step, cfg.steps),  # rises to 1 (BYOL / DINO)
        "teacher_temp": linear_warmup(cfg.teacher_temp_start, cfg.teacher_temp, step, cfg.teacher_temp_warmup),
    }


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)
