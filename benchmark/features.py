"""Feature extraction and the on-disk feature cache.

Features are computed once per (checkpoint sha256 + encoder, dataset identity + image list, transform,
feature name) and stored as `.npy` files (memory-mappable) beside a JSON description of their key. Every
part of the key is hashed, so features of another checkpoint, transform or image list can never be
reused. Files are written to a temporary name and renamed when complete: a crash leaves no half-file.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2 as T
from tqdm import tqdm

from model_zoo.download import atomic_write_text, cache_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Patch-token features are large (N x D per image): stored in float16, the rest in float32.
HALF_FEATURES = {"patch", "patch_last4"}


@dataclass(frozen=True)
class TransformSpec:
    """Evaluation transform: resize the shorter side, center crop, normalise."""
    resize: int
    crop: int
    interpolation: str = "bicubic"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def build(self):
        mode = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[self.interpolation]
        # Resize and crop act on the PIL image (PIL's resampling, as the official torchvision v1 pipelines).
        return T.Compose([T.Resize(self.resize, interpolation=mode), T.CenterCrop(self.crop), T.ToImage(),
                          T.ToDtype(torch.float32, scale=True), T.Normalize(self.mean, self.std)])


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


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """Directory of cached features: `<root>/<key[:2]>/<key>.npy` + `<key>.json`."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else cache_dir() / "features"
        self.hits = 0
        self.misses = 0

    def key(self, model, source, indices, transform: TransformSpec, name: str) -> tuple[str, dict]:
        info = model.info
        description = {
            "checkpoint_sha256": info.sha256, "weights": info.weights, "layout": info.layout,
            "method_rules": asdict(model.spec), "num_heads": info.num_heads,
            "dataset": source.identity, "images": _digest([source.names[i] for i in indices]),
            "num_images": len(indices), "transform": asdict(transform), "feature": name,
            "precision": "bf16" if model.bf16 and model.device.type == "cuda" else "fp32",
        }
        return _digest(description), description

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, model, source, indices, transform: TransformSpec, names: list[str], batch_size: int = 64,
            workers: int | None = None, progress: bool = True) -> dict[str, np.ndarray]:
        """Features for `indices` of `source`, memory-mapped from the cache; missing ones are computed together."""
        keys = {n: self.key(model, source, indices, transform, n) for n in names}
        result, todo = {}, []
        for n, (key, _) in keys.items():
            path = self._path(key)
            if path.exists():
                result[n] = np.load(path, mmap_mode="r")
                self.hits += 1
            else:
                todo.append(n)
        if todo:
            self.misses += len(todo)
            tmp = {n: self._path(keys[n][0]).with_name(f".{keys[n][0]}.{os.getpid()}.tmp.npy") for n in todo}

            def allocate(name, shape, dtype):  # stream straight into the cache file
                tmp[name].parent.mkdir(parents=True, exist_ok=True)
                return np.lib.format.open_memmap(tmp[name], mode="w+", dtype=dtype, shape=shape)

            t0 = time.time()
            try:
                feats = extract_features(model, source, indices, transform, todo, batch_size, workers, progress, allocate)
            except BaseException:
                for path in tmp.values():
                    path.unlink(missing_ok=True)
                raise
            seconds = time.time() - t0
            for n in todo:
                feats[n].flush()
                del feats[n]
                key, description = keys[n]
                path = self._path(key)
                atomic_write_text(path.with_suffix(".json"), json.dumps({**description, "seconds": seconds}, indent=1))
                os.replace(tmp[n], path)
                result[n] = np.load(path, mmap_mode="r")
        return result
