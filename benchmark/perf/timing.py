"""Small timing helpers shared by the perf scripts."""
from __future__ import annotations

import time

import torch


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def seconds(fn, device="cpu", repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def throughput(fn, items: int, device="cpu", repeats: int = 3) -> float:
    """Items per second of `fn()`, best of `repeats`."""
    return items / seconds(fn, device, repeats)
