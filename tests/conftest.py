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


DINO_FIXTURE = FIXTURES / "dino" / "dino_pretrain.pth"


def fixture_heads(method: str = "dino") -> int:
    import json

    return json.loads((require(FIXTURES / method) / "config.json").read_text())["num_heads"]


def fixture_model_args() -> list[str]:
    """`lowshot bench` arguments for the official-layout DINO fixture checkpoint (skips without ../shared)."""
    return ["--model", str(require(DINO_FIXTURE)), "--method", "dino", "--num-heads", str(fixture_heads())]


def fixture_model(path=DINO_FIXTURE, **kwargs):
    """The DINO fixture checkpoint (or another DINO-layout file) as a FeatureExtractor."""
    from model_zoo import load_model

    return load_model(require(path), method="dino", num_heads=fixture_heads(), **kwargs)
