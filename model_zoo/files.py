"""Files written whole or not at all, and digests: the bottom of the import graph (every layer uses these).

`with atomic_path(path) as tmp:` hands out a fresh temporary file in the target directory and renames it over
`path` when the block ends without an error (`atomic_write(path, write)` does the same around `write(tmp)`): a
crash or an error leaves the old file (or none), never half a file, and concurrent writers never share a
temporary name. Temporary names contain ".tmp". Files get the permissions an ordinary `open(..., "w")` would
give (0666 minus the umask), not the 0600 of `tempfile.mkstemp`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh temporary path beside `path`, renamed to `path` when the block succeeds and removed when it fails.
    `suffix` ends the temporary name (matplotlib picks the format from it: ".tmp.png")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[Path], object], suffix: str = ".tmp") -> Path:
    """Call `write(tmp)` on a fresh temporary path beside `path`, then rename it to `path`."""
    with atomic_path(path, suffix) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def digest(obj) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys): the identity of a description."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
