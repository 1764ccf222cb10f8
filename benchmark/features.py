"""Feature extraction and the on-disk feature cache.

Features are computed once per (checkpoint sha256 + encoder, dataset identity + image list, transform,
feature name) and stored as `.npy` files (memory-mappable) beside a JSON description of their key. Every
part of the key is hashed, so features of another checkpoint, transform or image list can never be
reused. Files are written to a temporary name and renamed when complete (`model_zoo.files.atomic_path`): a crash
leaves no half-file.
Under torchrun (`FeatureCache(sharded=True)`, see `benchmark.distributed`) each rank extracts a contiguous shard
into its own temporary file and rank 0 merges the shards into the cache file.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model_zoo.download import cache_dir
from model_zoo.files import atomic_path, atomic_write_text, digest
from model_zoo.transforms import TransformSpec

from . import distributed

# Patch-token features are large (N x D per image): stored in float16, the rest in float32.
HALF_FEATURES = {"patch", "patch_last4"}
MERGE_CHUNK_BYTES = 64 << 20  # rows copied at a time when rank 0 merges the shards


class _Images(torch.utils.data.Dataset):
    def __init__(self, source, indices, transform):
        self.source, self.indices, self.transform = source, indices, transform

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, j):
        return self.transform(self.source.load_image(int(self.indices[j])))


def default_workers() -> int:
    """DataLoader workers from the machine: leave one core to the main process."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def extract_features(model, source, indices, transform: TransformSpec, names: list[str], batch_size: int = 64,
                     workers: int | None = None, progress: bool = True, allocate=None) -> dict:
    """Run `model.extract` over `source` images `indices`; returns {name: array [len(indices), ...]}.

    `allocate(name, shape, dtype)` makes each output array (default: in memory; the cache passes memory maps, so
    features larger than RAM stream to disk). A NaN/inf feature stops the run with the image named.
    """
    workers = default_workers() if workers is None else workers
    allocate = allocate or (lambda name, shape, dtype: np.empty(shape, dtype))
    indices = np.asarray(indices)
    loader = torch.utils.data.DataLoader(
        _Images(source, indices, transform.build()), batch_size=batch_size, num_workers=workers,
        pin_memory=model.device.type == "cuda", prefetch_factor=4 if workers else None)
    out, start = {}, 0
    for batch in tqdm(loader, desc=f"features {source.identity}", disable=not progress, unit="batch"):
        feats = model.extract(batch.to(model.device, non_blocking=True), names)
        for name, f in feats.items():
            f = f.cpu().numpy()
            bad = ~np.isfinite(f.reshape(len(f), -1)).all(1)
            if bad.any():
                first = source.names[int(indices[start + int(np.flatnonzero(bad)[0])])]
                raise FloatingPointError(f"{model.info.name}: feature {name!r} is NaN/inf for {int(bad.sum())} "
                                         f"image(s) of {source.identity}, e.g. {first}; nothing was cached")
            if name not in out:
                out[name] = allocate(name, (len(indices),) + f.shape[1:], np.float16 if name in HALF_FEATURES else np.float32)
            out[name][start:start + len(f)] = f
        start += len(batch)
    return out


class FeatureCache:
    """Directory of cached features: `<root>/<key[:2]>/<key>.npy` + `<key>.json`."""

    def __init__(self, root: str | Path | None = None, sharded: bool = False):
        self.root = Path(root) if root else cache_dir() / "features"
        # sharded: under an initialised torch.distributed group, every rank calls get() alike (benchmark.distributed)
        self.sharded = sharded
        self.hits = 0
        self.misses = 0

    def key(self, model, source, indices, transform: TransformSpec, name: str) -> tuple[str, dict]:
        info = model.info
        description = {
            "checkpoint_sha256": info.sha256, "weights": info.weights, "layout": info.layout,
            "eval_config": asdict(model.eval_config), "num_heads": info.num_heads,
            "dataset": source.identity, "images": digest([source.names[i] for i in indices]),
            "num_images": len(indices), "transform": asdict(transform), "feature": name,
            "precision": "bf16" if model.bf16 and model.device.type == "cuda" else "fp32",
        }
        return digest(description), description

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, model, source, indices, transform: TransformSpec, names: list[str], batch_size: int = 64,
            workers: int | None = None, progress: bool = True) -> dict[str, np.ndarray]:
        """Features for `indices` of `source`, memory-mapped from the cache; missing ones are computed together.

        With `sharded`, every rank of the torch.distributed group calls this alike: rank 0 decides what is missing,
        each rank extracts its shard, rank 0 merges them, and all ranks return the merged cache files."""
        keys = {n: self.key(model, source, indices, transform, n) for n in names}
        todo = [n for n, (key, _) in keys.items() if not self._path(key).exists()]
        sharded = self.sharded and distributed.active()
        if sharded:
            todo = distributed.broadcast(todo)
        self.hits += len(names) - len(todo)
        if todo:
            self.misses += len(todo)
            extract = self._extract_sharded if sharded else self._extract
            extract(model, source, np.asarray(indices), transform, todo, keys, batch_size, workers, progress)
        return {n: np.load(self._path(keys[n][0]), mmap_mode="r") for n in names}

    @staticmethod
    def _memmaps(paths: dict):
        def allocate(name, shape, dtype):  # stream straight into the (temporary) file
            paths[name].parent.mkdir(parents=True, exist_ok=True)
            return np.lib.format.open_memmap(paths[name], mode="w+", dtype=dtype, shape=shape)
        return allocate

    def _describe(self, key: str, description: dict, **extra) -> None:
        """The JSON description beside a cache file (written before the array is renamed into place)."""
        atomic_write_text(self._path(key).with_suffix(".json"), json.dumps({**description, **extra}, indent=1))

    def _extract(self, model, source, indices, transform, todo, keys, batch_size, workers, progress) -> None:
        t0 = time.time()
        with contextlib.ExitStack() as arrays:  # each array streams into a temporary file, renamed once complete
            tmp = {n: arrays.enter_context(atomic_path(self._path(keys[n][0]), ".tmp.npy")) for n in todo}
            feats = extract_features(model, source, indices, transform, todo, batch_size, workers, progress,
                                     self._memmaps(tmp))
            seconds = time.time() - t0
            for n in todo:
                feats[n].flush()
                del feats[n]
                self._describe(*keys[n], seconds=seconds)

    def _extract_sharded(self, model, source, indices, transform, todo, keys, batch_size, workers, progress) -> None:
        """Rank r extracts `indices[r*n//w:(r+1)*n//w]` into its own temporary file; rank 0 merges them in order.

        A failure on any rank (extraction or merge) raises `ShardError` on every rank, and no cache or shard file
        is left behind."""
        r, w = distributed.rank(), distributed.world_size()
        token = distributed.broadcast(uuid.uuid4().hex)  # one name for this extraction's shard files on all ranks
        parts = [distributed.shard(len(indices), q, w) for q in range(w)]

        def shard_file(n, q):
            return self._path(keys[n][0]).with_name(f".{keys[n][0]}.{token}.shard{q}of{w}.tmp.npy")

        mine = {n: shard_file(n, r) for n in todo}
        t0 = time.time()
        try:
            error = None
            try:
                feats = extract_features(model, source, indices[parts[r]], transform, todo, batch_size, workers,
                                         progress and r == 0, self._memmaps(mine))
                for f in feats.values():
                    f.flush()
                del feats
            except Exception as e:
                error = e
            distributed.raise_if_any_failed(error, f"{model.info.name}: sharded extraction of {source.identity}")
            seconds = max(distributed.gather(time.time() - t0))
            error = None
            if r == 0:
                try:
                    for n in todo:
                        self._merge(*keys[n], [shard_file(n, q) for q in range(w)], parts, seconds)
                except Exception as e:
                    error = e
            # Also the barrier: no rank loads the cache files before rank 0 has published them.
            distributed.raise_if_any_failed(error, f"{model.info.name}: merging the shards of {source.identity}")
        finally:  # each rank removes its own shard files, after rank 0 has read them or on failure
            for path in mine.values():
                path.unlink(missing_ok=True)

    def _merge(self, key: str, description: dict, shards: list[Path], parts: list[slice], seconds: float) -> None:
        """Copy the shard files, in rank order, into one cache file (chunked; temporary name, then renamed)."""
        n = parts[-1].stop
        with atomic_path(self._path(key), ".tmp.npy") as tmp:
            out = None
            for shard, part in zip(shards, parts):
                if part.stop == part.start:  # fewer images than ranks: this rank had none
                    continue
                src = np.load(shard, mmap_mode="r")
                if len(src) != part.stop - part.start or (out is not None and (
                        src.dtype != out.dtype or src.shape[1:] != out.shape[1:])):
                    raise ValueError(f"shard file {shard} holds {src.shape} {src.dtype}, expected "
                                     f"{part.stop - part.start} rows like the other shards")
                if out is None:
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=src.dtype, shape=(n,) + src.shape[1:])
                step = max(1, MERGE_CHUNK_BYTES // max(1, src[:1].nbytes))
                for s in range(0, len(src), step):
                    chunk = src[s:s + step]
                    out[part.start + s:part.start + s + len(chunk)] = chunk
                del src
            if out is None:
                raise ValueError("no shard holds any image")
            out.flush()
            del out
            self._describe(key, description, seconds=seconds, ranks=len(parts))
