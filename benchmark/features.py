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
import os
import time
import uuid
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from lowshot.model_zoo.download import cache_dir
from lowshot.model_zoo.errors import LowshotWarning, NonFiniteError
from lowshot.model_zoo.files import digest, temporary_prefix
from lowshot.model_zoo.transforms import TransformSpec

from . import distributed
from .array_store import ArrayStore, new_memmap
from .progress import Progress

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


def model_identity(model) -> dict:
    """Everything about a loaded model that decides its features: weights, how they were read, its rules."""
    info = model.info
    return {"source": info.source, "checkpoint_sha256": info.sha256, "revision": info.revision, "layout": info.layout,
            "weights": info.weights, "method": info.method,
            "architecture": info.architecture(),
            "eval_config": asdict(model.eval_config),
            "precision": "bf16" if model.bf16 else "fp32"}  # bf16 autocast runs on CUDA and CPU alike


def machine_cores() -> int:
    """The CPU cores this process may run on (its affinity, e.g. a SLURM allocation; else the machine's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def default_workers() -> int:
    """DataLoader workers from the machine: leave one core to the main process."""
    return max(0, min(8, machine_cores() - 1))


def capped_workers(workers: int, option: str = "workers") -> int:
    """`workers`, at most the cores this process has (each worker is a process with its own copy of the dataset
    reader: thousands of them exhaust the memory); a warning says when it was capped."""
    cores = machine_cores()
    if workers > cores:
        warnings.warn(f"{option} {workers}: this process has {cores} CPU core(s); using {cores} DataLoader "
                      "worker(s)", LowshotWarning, stacklevel=2)
        return cores
    return workers


def extract_features(model, source, indices, transform: TransformSpec, names: list[str], batch_size: int = 64,
                     workers: int | None = None, progress: bool = True, allocate=None) -> dict:
    """Run `model.extract` over `source` images `indices`; returns {name: array [len(indices), ...]}.

    `allocate(name, shape, dtype)` makes each output array (default: in memory; the cache passes memory maps, so
    features larger than RAM stream to disk). A NaN/inf feature stops the run with the image named.
    """
    workers = default_workers() if workers is None else capped_workers(workers)
    allocate = allocate or (lambda name, shape, dtype: np.empty(shape, dtype))
    indices = np.asarray(indices)
    loader = torch.utils.data.DataLoader(
        _Images(source, indices, transform.build()), batch_size=batch_size, num_workers=workers,
        pin_memory=model.device.type == "cuda", prefetch_factor=4 if workers else None)
    out, start = {}, 0
    bar = Progress(len(indices), f"{model.info.name}: features {', '.join(names)} of {source.identity}", "img",
                   enabled=progress)
    for batch in loader:
        feats = model.extract(batch.to(model.device, non_blocking=True), names)
        for name, f in feats.items():
            f = f.cpu().numpy()
            bad = ~np.isfinite(f.reshape(len(f), -1)).all(1)
            if bad.any():
                first = source.names[int(indices[start + int(np.flatnonzero(bad)[0])])]
                raise NonFiniteError(f"{model.info.name}: feature {name!r} is NaN/inf for {int(bad.sum())} "
                                         f"image(s) of {source.identity}, e.g. {first}; nothing was cached")
            if name not in out:
                out[name] = allocate(name, (len(indices),) + f.shape[1:], np.float16 if name in HALF_FEATURES else np.float32)
            out[name][start:start + len(f)] = f
        start += len(batch)
        bar.update(len(batch))
    bar.close()
    return out


class FeatureCache:
    """Cached features: one verified entry of an `ArrayStore` per (model, images, transform, feature)."""

    def __init__(self, root: str | Path | None = None, sharded: bool = False):
        self.root = Path(root) if root else cache_dir() / "features"
        self.store = ArrayStore(self.root)
        # sharded: under an initialised torch.distributed group, every rank calls get() alike (benchmark.distributed)
        self.sharded = sharded
        self.hits = 0
        self.misses = 0

    def key(self, model, source, indices, transform: TransformSpec, name: str) -> tuple[str, dict]:
        description = {"model": model_identity(model), "dataset": source.identity,
                       "images": source.fingerprint(indices), "num_images": len(indices),
                       "transform": asdict(transform), "feature": name}
        return digest(description), description

    def _path(self, key: str) -> Path:
        return self.store.path(key)

    def is_cached(self, model, source, indices, transform: TransformSpec, name: str) -> bool:
        """Whether the cache holds this feature set (its files are there; `get` verifies them)."""
        return self._path(self.key(model, source, np.asarray(indices), transform, name)[0]).exists()

    def array(self, description: dict, shape: tuple, dtype, fill) -> np.ndarray:
        """Any other array kept beside the features (e.g. segmentation masks): see `ArrayStore.array`."""
        return self.store.array(description, shape, dtype, fill)

    def get(self, model, source, indices, transform: TransformSpec, names: list[str], batch_size: int = 64,
            workers: int | None = None, progress: bool = True) -> dict[str, np.ndarray]:
        """Features for `indices` of `source`, memory-mapped from the cache (every hit verified); missing ones are
        computed together, by one process at a time (another one waits for them, then reads them).

        With `sharded`, every rank of the torch.distributed group calls this alike: rank 0 decides what is missing,
        each rank extracts its shard, rank 0 merges them, and all ranks return the merged cache files."""
        indices = np.asarray(indices)
        keys = {n: self.key(model, source, indices, transform, n) for n in names}

        def lookup(n):
            return self.store.lookup(*keys[n], len(indices), np.float16 if n in HALF_FEATURES else np.float32)

        found = {n: lookup(n) for n in names}
        todo = [n for n in names if found[n] is None]
        sharded = self.sharded and distributed.active()
        if sharded:
            todo = distributed.broadcast(todo)
            if todo:
                self._extract_sharded(model, source, indices, transform, todo, keys, batch_size, workers, progress)
        elif todo:
            with self.store.locked([keys[n][0] for n in todo], f"features of {source.identity}"):
                found.update({n: lookup(n) for n in todo})  # another process may have made them meanwhile
                todo = [n for n in todo if found[n] is None]
                if todo:
                    self._extract(model, source, indices, transform, todo, keys, batch_size, workers, progress)
        self.hits += len(names) - len(todo)
        self.misses += len(todo)
        return {n: np.load(self._path(keys[n][0]), mmap_mode="r") if found[n] is None else found[n] for n in names}

    @staticmethod
    def _memmaps(paths: dict):
        def allocate(name, shape, dtype):  # stream straight into the (temporary) file
            return new_memmap(paths[name], dtype, shape)
        return allocate

    def _extract(self, model, source, indices, transform, todo, keys, batch_size, workers, progress) -> None:
        with contextlib.ExitStack() as arrays:  # each array streams into a temporary file, published once complete
            tmp = {n: arrays.enter_context(self.store.writing(*keys[n])) for n in todo}
            feats = extract_features(model, source, indices, transform, todo, batch_size, workers, progress,
                                     self._memmaps(tmp))
            for n in todo:
                feats[n].flush()
                del feats[n]

    def _extract_sharded(self, model, source, indices, transform, todo, keys, batch_size, workers, progress) -> None:
        """Rank r extracts `indices[r*n//w:(r+1)*n//w]` into its own temporary file; rank 0 merges them in order.

        A failure on any rank (extraction or merge) raises `ShardError` on every rank, and no cache or shard file
        is left behind."""
        r, w = distributed.rank(), distributed.world_size()
        token = distributed.broadcast(uuid.uuid4().hex[:8])  # one name for this extraction's shard files
        writers = distributed.gather(temporary_prefix(""))  # each rank's host and pid, as in temporary names
        parts = [distributed.shard(len(indices), q, w) for q in range(w)]

        def shard_file(n, q):
            key = keys[n][0]
            return self._path(key).with_name(f".{key}.npy{writers[q][1:]}{token}shard{q}of{w}.tmp.npy")

        mine = {n: shard_file(n, r) for n in todo}
        for path in mine.values():
            path.parent.mkdir(parents=True, exist_ok=True)
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
        with self.store.writing(key, description, seconds=seconds, ranks=len(parts)) as tmp:
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
                    out = new_memmap(tmp, src.dtype, (n,) + src.shape[1:])
                step = max(1, MERGE_CHUNK_BYTES // max(1, src[:1].nbytes))
                for s in range(0, len(src), step):
                    chunk = src[s:s + step]
                    out[part.start + s:part.start + s + len(chunk)] = chunk
                del src
            if out is None:
                raise ValueError("no shard holds any image")
            out.flush()
            del out
