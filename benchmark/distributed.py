"""Sharded feature extraction under `torchrun`: one process per device, torch.distributed for the rest.

`lowshot bench ... --extract-only` launched by torchrun (WORLD_SIZE > 1) calls `init`; then, on a cache miss,
`FeatureCache.get` has each rank extract a contiguous shard of the images into its own temporary file in the
cache directory and rank 0 merge the shards into the cache file. The cache directory must therefore be the
same directory for every rank (one node, or a shared filesystem): `check_shared_directory` verifies it.
Every step that can fail on one rank ends with `raise_if_any_failed`, so all ranks raise together instead of
waiting for each other.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import torch
import torch.distributed as dist

from lowshot.model_zoo.errors import BadInputError, LowshotError


class ShardError(LowshotError):
    """Some rank failed during sharded extraction; raised on every rank."""


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str) -> str:
    """Join the process group torchrun describes (nccl on CUDA, else gloo); returns this rank's device."""
    if device.startswith("cuda"):
        if device != "cuda":
            raise BadInputError(f"--device {device}: under torchrun pass --device cuda (rank r uses cuda:LOCAL_RANK)")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise BadInputError(f"LOCAL_RANK {local}, but only {torch.cuda.device_count()} CUDA device(s) are visible: "
                             "use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, r: int, w: int) -> slice:
    """Rank r's contiguous part of n items: [r*n//w, (r+1)*n//w)."""
    return slice(r * n // w, (r + 1) * n // w)


def broadcast(obj):
    """Rank 0's `obj` on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj) -> list:
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def raise_if_any_failed(error: BaseException | None, what: str) -> None:
    """Collective: every rank passes its own error (or None); if any rank failed, every rank raises ShardError
    naming each failed rank and its error."""
    errors = gather(None if error is None else f"{type(error).__name__}: {error}")
    failed = [f"rank {r}: {e}" for r, e in enumerate(errors) if e is not None]
    if failed:
        raise ShardError(f"{what} failed on {len(failed)} of {len(errors)} rank(s); nothing was cached\n  "
                         + "\n  ".join(failed)) from error


def check_shared_directory(root: Path) -> None:
    """Every rank must see the files rank 0 writes in `root` (the shards are merged there by rank 0)."""
    root = Path(root)
    error, marker = None, None
    if dist.get_rank() == 0:
        try:
            root.mkdir(parents=True, exist_ok=True)
            marker = root / f".shared-check-{uuid.uuid4().hex}"
            marker.touch()
        except OSError as e:
            error = e
    raise_if_any_failed(error, f"creating the feature cache directory {root}")
    marker = broadcast(marker)
    seen = gather(marker.exists())
    if dist.get_rank() == 0:
        marker.unlink(missing_ok=True)
    missing = [r for r, ok in enumerate(seen) if not ok]
    if missing:
        raise ShardError(f"the feature cache directory {root} is not shared by all ranks (rank(s) {missing} do not "
                         "see rank 0's files): run on one node or put the cache (--cache) on a shared filesystem")
