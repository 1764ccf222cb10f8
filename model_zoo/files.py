"""Files written whole or not at all, and digests: the bottom of the import graph (every layer uses these).

`with atomic_path(path) as tmp:` hands out a fresh temporary file in the target directory and renames it over
`path` when the block ends without an error (`atomic_write(path, write)` does the same around `write(tmp)`): a
crash or an error leaves the old file (or none), never half a file, and concurrent writers never share a
temporary name. Temporary names contain ".tmp" and the writer's host and process id
(`.<name>.<host>-<pid>.<random><suffix>`), so `remove_stale_temporaries` can delete those a killed process left.
Files get the permissions an ordinary `open(..., "w")` would give (0666 minus the umask), not the 0600 of
`tempfile.mkstemp`.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import WriteError

HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_TEMPORARY = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]*\.tmp")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_prefix(name: str) -> str:
    """The start of this process's temporary names for `name`: `.<name>.<host>-<pid>.`."""
    return f".{name}.{HOST}-{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files under `directory` whose writer (a process of this host) is no longer running;
    returns them. Another host's temporaries on a shared filesystem are left alone."""
    removed = []
    for path in Path(directory).rglob(".*tmp*"):
        m = _TEMPORARY.match(path.name)
        if m and m["host"] == HOST and not _alive(int(m["pid"])) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# Errors only a write gives: raised inside an atomic_path block, they are about the file being written.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def write_error(path: str | Path, error: OSError, what: str = "") -> WriteError:
    """The one-line error for `error` met while writing `path` (`what`: what was being written)."""
    reason = error.strerror or type(error).__name__
    return WriteError(f"cannot write {what + ' to ' if what else ''}{path}: {reason}"
                      + ("; free some space or write elsewhere" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "")
                      + "; nothing of it was kept")


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", what: str = "") -> Iterator[Path]:
    """A fresh temporary path beside `path`, renamed to `path` when the block succeeds and removed when it fails.
    `suffix` ends the temporary name (matplotlib picks the format from it: ".tmp.png"). A directory that cannot be
    made or written, and a full disk or read-only file system met in the block, raise `WriteError` naming `path`
    (and `what`, what is being written)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path.name), suffix=suffix)
    except OSError as e:
        raise write_error(path, e, what) from e
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, WriteError) or e.errno not in WRITE_ERRNOS:
            raise
        raise write_error(path, e, what) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[Path], object], suffix: str = ".tmp", what: str = "") -> Path:
    """Call `write(tmp)` on a fresh temporary path beside `path`, then rename it to `path`."""
    with atomic_path(path, suffix, what) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, what: str = "") -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what=what)


def reserve(path: str | Path) -> None:
    """Allocate the disk blocks of `path` (a file created at its full size, e.g. a fresh memory-mapped array) before
    anything is written into it: a full disk is then an ENOSPC error here (inside `atomic_path`: a `WriteError`
    naming the file), never a bus error when a memory-mapped page without a block behind it is first written."""
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        if size:
            os.posix_fallocate(f.fileno(), 0, size)


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


def array_digest(array) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    import numpy as np

    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()
