"""Files written whole or not at all, and digests: the bottom of the import graph (every layer uses these).

`atomic_write(path, write)` has `write(tmp_path)` fill a temporary file in the target directory, then renames it
over `path`: a crash or an error leaves the old file (or none), never half a file, and concurrent writers never
share a temporary name. Files get the permissions an ordinary `open(..., "w")` would give (0666 minus the umask),
not the 0600 of `tempfile.mkstemp`.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], object], suffix: str = ".tmp") -> Path:
    """Call `write(tmp)` on a fresh temporary path beside `path`, then rename it to `path`. `suffix` ends the
    temporary name (some writers, e.g. matplotlib or numpy, pick the format from it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
