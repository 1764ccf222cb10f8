"""Download + cache: one cache directory, resumable downloads to a partial file, sha256 verification.

Files whose registry entry has no sha256 are hashed on first download and the hash is recorded in the
cache manifest (`manifest.json`); later uses verify against it (trust on first use).
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .errors import BadInputError, LowshotError
from .files import atomic_write_text, sha256_file

CACHE_ENV = "LOWSHOT_CACHE"


class DownloadError(LowshotError):
    pass


class ChecksumError(BadInputError):
    pass


def cache_dir() -> Path:
    """`$LOWSHOT_CACHE`, else `$XDG_CACHE_HOME/lowshot-bench`, else `~/.cache/lowshot-bench`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lowshot-bench"


def _manifest_path(directory: Path) -> Path:
    return directory / "manifest.json"


def read_manifest(directory: Path | None = None) -> dict:
    path = _manifest_path(directory or cache_dir())
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadInputError(f"cache manifest {path} is not valid JSON ({e}); delete it to rebuild") from None


def _record(directory: Path, name: str, url: str, digest: str, size: int) -> None:
    manifest = read_manifest(directory)
    manifest[name] = {"url": url, "sha256": digest, "size": size}
    atomic_write_text(_manifest_path(directory), json.dumps(manifest, indent=1, sort_keys=True))


def _verify(path: Path, expected: str | None, what: str) -> str:
    digest = sha256_file(path)
    if expected and digest != expected.lower():
        raise ChecksumError(f"sha256 mismatch for {what} ({path}): expected {expected}, got {digest}. "
                            "The file is corrupt or not the release file; delete it and download again.")
    return digest


def download(url: str, dest: Path, sha256: str | None = None, progress: bool = True) -> Path:
    """Download `url` to `dest` via `dest.partial` (resumed when the server supports ranges), verify, rename."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    start = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lowshot-bench"})
    if start and url.startswith(("http://", "https://")):
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"could not download {url}: {reason}. If this machine is offline, download the file elsewhere "
            f"and either place it at {dest} or pass its path instead of the model name "
            f"(e.g. lowshot bench --model /path/to/{dest.name} --method ... --num-heads ...).") from None
    with response:
        resumed = start and getattr(response, "status", 200) == 206
        mode = "ab" if resumed else "wb"
        total = response.headers.get("Content-Length")
        total = int(total) + (start if resumed else 0) if total else None
        with open(partial, mode) as f, tqdm(total=total, initial=start if resumed else 0, unit="B",
                                            unit_scale=True, desc=dest.name, disable=not progress) as bar:
            while block := response.read(1 << 20):
                f.write(block)
                bar.update(len(block))
    try:
        _verify(partial, sha256, url)
    except ChecksumError:
        partial.unlink()
        raise
    os.replace(partial, dest)
    return dest


def fetch(url: str, file_name: str, sha256: str | None = None, directory: Path | None = None,
          progress: bool = True) -> tuple[Path, str]:
    """Return (cached path, sha256) of `url`, downloading it first if needed; verify sha256 (given or manifest)."""
    directory = Path(directory or cache_dir())
    dest = directory / file_name
    known = sha256 or read_manifest(directory).get(file_name, {}).get("sha256")
    if not dest.exists():
        download(url, dest, known, progress)
    digest = _verify(dest, known, url)
    if not known:
        _record(directory, file_name, url, digest, dest.stat().st_size)
    return dest, digest


def is_cached(file_name: str, directory: Path | None = None) -> bool:
    return (Path(directory or cache_dir()) / file_name).exists()
