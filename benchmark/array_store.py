"""Verified array files on disk: the storage under the feature cache (features, segmentation masks).

Each entry is `<root>/<key[:2]>/<key>.npy` (memory-mappable) beside `<key>.json`: the description the key is
the digest of, plus the array's shape, dtype and an xxh3-64 checksum of the file, recorded when it was
written. Every lookup checks them all (description, readable header, row count, dtype, checksum): an entry
that fails is reported in one warning naming the file, removed, and computed again; a valid entry is never
recomputed. Checksumming costs about 0.1 s per GB on this project's CPU (plus reading the file).

Writers stream into a temporary file (`model_zoo.files.atomic_path`) renamed when complete, so a reader never
sees half a file; a process-wide `FileLock` per entry (py-filelock) makes a second process that wants the same
entry wait and then read it, instead of computing it again. Temporary files of killed processes are removed
when a store is opened.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import numpy as np
import xxhash
from filelock import FileLock, Timeout

from lowshot.model_zoo.errors import LowshotWarning
from lowshot.model_zoo.files import (atomic_path, atomic_write_text, digest, remove_stale_temporaries, reserve,
                                     write_error)

CHECKSUM = "xxh3_64"


def new_memmap(path: Path, dtype, shape: tuple) -> np.ndarray:
    """A fresh `.npy` memory map at `path` with its disk space reserved first (`model_zoo.files.reserve`): a full
    disk raises ENOSPC before any row is written, instead of a bus error in the middle of a run."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        reserve(path)
    except OSError:
        del array
        raise
    return array


def file_checksum(path: Path, chunk: int = 16 << 20) -> str:
    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _what(description: dict) -> str:
    """What a cache entry holds, for an error message: `feature 'cls' of <dataset> in the feature cache`."""
    if "feature" in description:
        return f"feature {description['feature']!r} of {description.get('dataset', 'a dataset')} in the feature cache"
    return f"{description.get('kind', 'an array')} in the feature cache"


class ArrayStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.repaired = 0  # damaged entries found (and removed) by lookups
        if self.root.is_dir():
            remove_stale_temporaries(self.root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def lookup(self, key: str, description: dict, rows: int, dtype=None) -> np.ndarray | None:
        """The entry's array (read-only memory map) when present and intact; None when absent or damaged (a damaged
        entry is removed, with a warning naming its file and what is wrong)."""
        path, meta = self.path(key), self.path(key).with_suffix(".json")
        if not path.exists() and not meta.exists():
            return None
        problem, array = None, None
        try:
            stored = json.loads(meta.read_text())
            array = np.load(path, mmap_mode="r")
            expected = json.loads(json.dumps(description))  # as JSON stores it (tuples become lists)
            if {k: stored.get(k) for k in expected} != expected:
                problem = "its description belongs to another entry"
            elif CHECKSUM not in stored:
                problem = "it has no checksum (written by an older version)"
            elif array.shape[0] != rows or list(array.shape) != stored.get("shape"):
                problem = f"it holds {tuple(array.shape)}, expected {rows} rows of shape {stored.get('shape')}"
            elif (dtype is not None and array.dtype != np.dtype(dtype)) or str(array.dtype) != stored.get("dtype"):
                problem = f"its dtype is {array.dtype}"
            elif file_checksum(path) != stored[CHECKSUM]:
                problem = "its content does not match its checksum"
        except FileNotFoundError as e:
            problem = f"{Path(e.filename).name} is missing"
        except (OSError, ValueError, json.JSONDecodeError) as e:  # truncated or garbled header, unreadable JSON
            problem = f"it is unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        if problem is None:
            return array
        del array
        warnings.warn(f"cache file {path} is damaged ({problem}); recomputing it", LowshotWarning, stacklevel=2)
        path.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        self.repaired += 1
        return None

    @contextlib.contextmanager
    def locked(self, keys, what: str = "it"):
        """Hold the lock of every key (in sorted order, so two processes never wait for each other)."""
        with contextlib.ExitStack() as held:
            for key in sorted(set(keys)):
                lock = FileLock(str(self.path(key).with_suffix(".lock")))
                try:
                    self.path(key).parent.mkdir(parents=True, exist_ok=True)
                    lock.acquire(timeout=0)
                except Timeout:
                    print(f"waiting for another process computing {what} (lock {lock.lock_file})", flush=True)
                    lock.acquire()
                except OSError as e:  # a read-only or forbidden cache directory
                    raise write_error(lock.lock_file, e, f"the lock of {what} in the cache") from e
                held.callback(lock.release)
            yield

    @contextlib.contextmanager
    def writing(self, key: str, description: dict, **extra):
        """A temporary path to write the entry's `.npy` into; when the block ends, the description (with the
        file's shape, dtype and checksum) is written and the array renamed into place."""
        with atomic_path(self.path(key), ".tmp.npy", what=_what(description)) as tmp:
            yield tmp
            array = np.load(tmp, mmap_mode="r")
            shape, dtype = list(array.shape), str(array.dtype)
            del array
            atomic_write_text(self.path(key).with_suffix(".json"), json.dumps(
                {**description, "shape": shape, "dtype": dtype, CHECKSUM: file_checksum(tmp), **extra}, indent=1))

    def array(self, description: dict, shape: tuple, dtype, fill) -> np.ndarray:
        """The entry of `description`: looked up, or made by `fill(out)` into a fresh memory-mapped array."""
        key = digest(description)
        found = self.lookup(key, description, shape[0], dtype)
        if found is not None:
            return found
        with self.locked([key], description.get("kind", "an array")):
            found = self.lookup(key, description, shape[0], dtype)
            if found is not None:
                return found
            with self.writing(key, description) as tmp:
                out = new_memmap(tmp, dtype, shape)
                fill(out)
                out.flush()
                del out
        return np.load(self.path(key), mmap_mode="r")
