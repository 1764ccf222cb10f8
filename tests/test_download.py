"""Download + cache: partial file then rename, sha256 verification, manifest, offline message."""
from __future__ import annotations

import json
import socket

import pytest

from lowshot.model_zoo import download
from lowshot.model_zoo.download import ChecksumError, DownloadError


def _source(tmp_path, payload=b"x" * 3000):
    src = tmp_path / "release.bin"
    src.write_bytes(payload)
    return src, download.sha256_file(src)


def test_fetch_verifies_and_caches(tmp_path):
    src, digest = _source(tmp_path)
    cache = tmp_path / "cache"
    path, got = download.fetch(src.as_uri(), "m--release.bin", digest, directory=cache, progress=False)
    assert path.read_bytes() == src.read_bytes() and got == digest
    assert not list(cache.glob("*.partial"))
    src.unlink()  # second call: served from the cache, no download
    assert download.fetch(src.as_uri(), "m--release.bin", digest, directory=cache, progress=False)[0] == path


def test_sha256_mismatch_leaves_nothing(tmp_path):
    src, _ = _source(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        download.fetch(src.as_uri(), "bad.bin", "0" * 64, directory=cache, progress=False)
    assert not (cache / "bad.bin").exists() and not list(cache.glob("*.partial"))


def test_manifest_records_unknown_hash_then_enforces_it(tmp_path):
    src, digest = _source(tmp_path)
    cache = tmp_path / "cache"
    download.fetch(src.as_uri(), "tofu.bin", None, directory=cache, progress=False)
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["tofu.bin"]["sha256"] == digest and manifest["tofu.bin"]["url"] == src.as_uri()
    (cache / "tofu.bin").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="tofu.bin"):
        download.fetch(src.as_uri(), "tofu.bin", None, directory=cache, progress=False)


def test_offline_message_names_url_and_local_file_option(tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on: connection refused, like no network
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/dino_deitsmall16_pretrain.pth"
    with pytest.raises(DownloadError) as e:
        download.fetch(url, "dino.pth", None, directory=tmp_path, progress=False)
    assert url in str(e.value) and "pass its path" in str(e.value)


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LOWSHOT_CACHE", str(tmp_path / "c"))
    assert download.cache_dir() == tmp_path / "c"
