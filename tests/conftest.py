"""Shared test helpers: the read-only reference data in ../shared (skip clearly when it is absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOWSHOT_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "official_checkpoints"
SPLITS = SHARED / "splits" / "imagenet"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data not found at {path} (the ../shared folder beside the checkout; "
                    "set LOWSHOT_SHARED to its location)")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty download cache: nothing reads or writes the user's cache."""
    monkeypatch.setenv("LOWSHOT_CACHE", str(tmp_path_factory.mktemp("cache")))
