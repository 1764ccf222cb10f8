"""Shared test helpers: the read-only reference data in ../shared (skip clearly when it is absent)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowshot.tasks.datasets.imagenet import IMAGENET_SPLITS

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
    from lowshot.model_zoo import load_model

    return load_model(require(path), method="dino", num_heads=fixture_heads(), **kwargs)


# A small ImageNet-style folder (3 classes) and split files in the MSN layout for it.
IMAGEFOLDER_CLASSES = ["n01000001", "n01000002", "n01000003"]


def write_imagefolder(root, per_class=14, val_per_class=4):
    """Images whose colour depends on the class, so a probe can learn something."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c, wnid in enumerate(IMAGEFOLDER_CLASSES):
            (root / split / wnid).mkdir(parents=True)
            for i in range(n):
                base = np.zeros((40, 48, 3)) + [60 + 80 * c, 200 - 70 * c, 120]
                img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / wnid / f"{wnid}_{i}.JPEG")


def write_imagenet_splits(root, per_class=14):
    """Split files in the MSN layout for the small ImageFolder (nested within a seed, as the official ones)."""
    for split in IMAGENET_SPLITS.values():
        seed = int(split.relpath[len("imagenet_subsets")])
        rng = np.random.default_rng(seed)
        orders = {w: rng.permutation(per_class) for w in IMAGEFOLDER_CLASSES}
        k = split.images_per_class or 4
        lines = [f"{w}_{i}.JPEG" for w in IMAGEFOLDER_CLASSES for i in orders[w][:k]]
        path = root / split.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
