"""Collapse avoidance for self-distillation targets: centering (DINO), Sinkhorn-Knopp (SwAV / MSN), ME-MAX (MSN).

Centering and Sinkhorn-Knopp shape the teacher's targets; ME-MAX regularises the student's predictions.
`teacher_targets` applies whichever of the first two a config names (both: Sinkhorn on centred logits).
Under DistributedDataParallel the batch statistics are reduced over all processes.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(x: torch.Tensor, op=None) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(x, op=op or dist.ReduceOp.SUM)
    return x


class Centering(nn.Module):
    """Running mean of the teacher's logits, subtracted before the teacher's softmax (DINO)."""

    def __init__(self, dim: int, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, dim))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits - self.center

    @torch.no_grad()
    def update(self, logits: torch.Tensor) -> None:
        flat = logits.reshape(-1, logits.shape[-1]).float()
        total = _all_reduce(flat.sum(0, keepdim=True))
        count = _all_reduce(torch.tensor(float(flat.shape[0]), device=flat.device))
        self.center.mul_(self.momentum).add_(total / count, alpha=1 - self.momentum)


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, iters: int = 3) -> torch.Tensor:
    """Soft assignments Q [B, K] from scores (logits / temperature) [B, K]: every row sums to 1 (each sample
    a distribution over prototypes) and, as the iterations converge, every column to B / K (equal partition;
    B counts all processes)."""
    scores = scores.float()
    peak = _all_reduce(scores.max().clone(), dist.ReduceOp.MAX if _distributed() else None)
    q = torch.exp(scores - peak).t()  # [K, B]
    k = q.shape[0]
    b = _all_reduce(torch.tensor(float(q.shape[1]), device=q.device))
    q /= _all_reduce(q.sum())
    for _ in range(iters):
        q /= _all_reduce(q.sum(dim=1, keepdim=True))  # each prototype gets 1 / K of the mass
        q /= k
        q /= q.sum(dim=0, keepdim=True)  # each sample gets 1 / B of the mass
        q /= b
    return (q * b).t()


class _AllReduceMean(torch.autograd.Function):
    """Mean over processes whose gradient is the identity (as MSN's AllReduce): with DDP's gradient averaging
    this yields the gradient of the loss on the global mean."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        if _distributed():
            dist.all_reduce(x)
            x /= dist.get_world_size()
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad


def me_max(probs: torch.Tensor) -> torch.Tensor:
    """log K - H(mean prediction) >= 0; minimising it spreads predictions over all prototypes (MSN)."""
    mean = _AllReduceMean.apply(probs.reshape(-1, probs.shape[-1]).mean(0))
    entropy = -(mean * torch.log(mean.clamp_min(1e-12))).sum()
    return math.log(mean.shape[0]) - entropy


def teacher_targets(logits: torch.Tensor, temperature: float, collapse: tuple, center: Centering | None,
                    sinkhorn_iters: int = 3) -> torch.Tensor:
    """Teacher probabilities [..., K] from its logits, with centering and / or Sinkhorn-Knopp."""
    if "centering" in collapse:
        logits = center(logits)
    scores = logits.float() / temperature
    if "sinkhorn" in collapse:
        shape = scores.shape
        return sinkhorn_knopp(scores.reshape(-1, shape[-1]), sinkhorn_iters).reshape(shape)
    return torch.softmax(scores, dim=-1)
