"""Tests of the embedded dataset (tasks/datasets/synthetic.py).  Runs in ~10 s on two cores."""

import hashlib
import os
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from lowshot.tasks.datasets import synthetic
from lowshot.tasks.datasets import synthetic_render as render
from lowshot.tasks.datasets.synthetic import SyntheticScenes, render_scene, write_lowshot_splits

TASKS = ("classification", "multilabel", "segmentation")


def _digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(b"" if a is None else np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- API


@pytest.mark.parametrize("task", TASKS)
def test_api_shapes_and_types(task):
    for split, n in [("train", 20800 if task == "classification" else 10000),
                     ("test", 800 if task == "classification" else 500)]:
        ds = SyntheticScenes(task=task, split=split, image_size=64)
        assert len(ds) == n == len(ds.names)
        assert 10 <= len(ds.classes) <= 20 and len(set(ds.classes)) == len(ds.classes)
        assert ds.identity == f"synthetic-scenes-v{synthetic.VERSION}/{task}/{split}/64px"
    im = ds.load_image(3)
    assert isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (64, 64)
    if task == "classification":
        assert ds.targets.dtype == np.int64 and ds.targets.shape == (n,)
        assert np.bincount(ds.targets).tolist() == [50] * len(ds.classes)
    elif task == "multilabel":
        t = ds.targets
        assert t.dtype == np.float32 and t.shape == (n, len(ds.classes))
        assert set(np.unique(t).tolist()) == {0.0, 1.0}
        assert t.sum(1).min() >= 1 and t.sum(1).max() <= 4
        assert (t.sum(0) > 0).all()                          # every class occurs
        assert ds.names[7] == "scene_7.png"
        assert t is SyntheticScenes(task, split).targets and not t.flags.writeable   # cached
    else:
        assert ds.targets is None
        m = ds.load_mask(3)
        assert m.dtype == np.uint8 and m.shape == (64, 64)
    if task != "segmentation":
        with pytest.raises(ValueError, match="segmentation"):
            ds.load_mask(0)
    with pytest.raises(IndexError):
        ds.load_image(n)
    with pytest.raises(ValueError):
        SyntheticScenes(task="detection")
    with pytest.raises(ValueError):
        SyntheticScenes(task, "val")
    with pytest.raises(ValueError):
        SyntheticScenes(task, "test", image_size=16)


@pytest.mark.parametrize("size", [32, 96])
def test_other_image_sizes(size):
    ds = SyntheticScenes("segmentation", "test", image_size=size)
    assert ds.identity.endswith(f"/{size}px")
    im, m = ds.load_image(1), ds.load_mask(1)
    assert im.size == (size, size) and m.shape == (size, size)
    for i in range(10):
        _, mask, labels = render_scene("segmentation", "test", i, size)
        assert set(np.unique(mask).tolist()) - {0, 255} == {c + 1 for c in labels}


def test_classification_names_encode_targets():
    ds = SyntheticScenes("classification", "train")
    names, targets = ds.names, ds.targets
    for i in [0, 1, 1299, 1300, 7777, 20799]:
        stem, num = re.fullmatch(r"(.+)_(\d+)\.png", names[i]).groups()   # ImageNet-style
        assert ds.classes.index(stem) == targets[i]
        assert ds.index_of(names[i]) == i
    assert len(set(names)) == len(names)
    for bad in ["disc_1300.png", "disc_01.png", "blob_3.png", "scene_3.png", "disc_3.jpg"]:
        with pytest.raises(KeyError, match="not an image of"):
            ds.index_of(bad)
    scenes = SyntheticScenes("multilabel", "test")
    assert scenes.index_of("scene_499.png") == 499
    with pytest.raises(KeyError):
        scenes.index_of("scene_500.png")


# ---------------------------------------------------------------- determinism


def test_golden_digest():
    """Content is pinned: changing the generator must bump VERSION (it is in `identity`)."""
    if render._bank()[2] != render._TEX_CRC:
        pytest.skip("scikit-image's bundled textures are missing or differ")
    got = {t: _digest(*(a for i in (0, 1, 777) for a in render_scene(t, "train", i)[:2]))
           for t in TASKS}
    assert got == GOLDEN, f"generator output changed: bump VERSION and update GOLDEN to {got}"


GOLDEN = {"classification": "e50e2567e8f7fe79", "multilabel": "e672e617eb9db6d9",
          "segmentation": "d828a3085709b3f6"}


def test_procedural_fallback_without_scikit_image(monkeypatch):
    """Without the bundled textures the images differ, so the identity must differ too."""
    monkeypatch.setattr(synthetic, "_bank", lambda: ([], [], 0))
    ds = SyntheticScenes("segmentation", "test")
    assert ds.identity == f"synthetic-scenes-v{synthetic.VERSION}+tex00000000/segmentation/test/64px"
    for i in range(20):
        img, mask, labels = render_scene("segmentation", "test", i)
        assert img.shape == (64, 64, 3) and img.std() > 5
        assert set(np.unique(mask).tolist()) - {0, 255} == {c + 1 for c in labels}


@pytest.mark.parametrize("task", TASKS)
def test_deterministic_and_order_independent(task):
    ids = [5, 3, 9, 3, 480]
    a, b = SyntheticScenes(task, "test"), SyntheticScenes(task, "test")
    first = {i: np.asarray(a.load_image(i)).tobytes() for i in ids}
    second = {i: np.asarray(b.load_image(i)).tobytes() for i in reversed(ids)}
    assert first == second
    if task == "segmentation":   # mask after image, image after mask: same content
        assert np.array_equal(a.load_mask(9), b.load_mask(9))
        b.load_mask(3)
        assert np.asarray(b.load_image(3)).tobytes() == first[3]


@pytest.mark.parametrize("task", TASKS)
def test_images_differ(task):
    digests = {_digest(render_scene(task, split, i)[0]) for split in ("train", "test")
               for i in range(40)}
    assert len(digests) == 80


# ---------------------------------------------------------------- labels


def _object_sdf_px(o, size):
    """Signed distance (px) of layout object o on the full pixel grid, as _draw computes it."""
    _, cx, cy, r, c, s, m = o
    dx = (np.arange(size, dtype=np.float32) + np.float32(0.5 - cx))[None, :]
    dy = (np.arange(size, dtype=np.float32) + np.float32(0.5 - cy))[:, None]
    u, v = (c * dx + s * dy) / r, (c * dy - s * dx) * (m / r)
    return np.maximum(render._SHAPE_FNS[o[0]](u, v), np.sqrt(u * u + v * v) - 1) * r


def test_segmentation_masks_match_visible_objects():
    ml = SyntheticScenes("multilabel", "test")
    counts, overlaps = Counter(), 0
    for i in range(60):
        img, mask, labels = render_scene("segmentation", "test", i)
        values = set(np.unique(mask).tolist())
        assert {0, 255} <= values                      # background and the ignore band
        assert values - {0, 255} == {c + 1 for c in labels}
        assert 1 <= len(labels) <= 4
        assert (mask == 255).mean() < 0.25             # a thin band, not whole objects
        counts.update(labels)
        # occlusion: the top object is fully visible; earlier ones lose what it covers
        objs = render._layout(render._rng("segmentation", "test", i), 64)
        assert [o[0] for o in objs] == labels
        top = _object_sdf_px(objs[-1], 64)
        assert (mask[top <= -render.EDGE_PX] == objs[-1][0] + 1).all()
        assert (mask[np.abs(top) < render.EDGE_PX] == 255).all()
        overlaps += any(((_object_sdf_px(o, 64) < 0) & (top < 0)).any() for o in objs[:-1])
        # multilabel targets follow the same rule (its own scenes, from its own layouts)
        _, none, ml_labels = render_scene("multilabel", "test", i)
        assert none is None
        assert np.flatnonzero(ml.targets[i]).tolist() == sorted(set(ml_labels))
    assert overlaps >= 3, "no scene exercised occlusion"
    assert len(counts) >= 12


def test_layouts_keep_every_object_visible():
    """The layout guarantee behind mask == targets, on many layouts (no rendering needed):
    painting objects in order, each keeps at least one fully covered pixel."""
    for i in range(600):
        objs = render._layout(render._rng("multilabel", "train", i), 64)
        owner = np.full((64, 64), -1)
        for k, o in enumerate(objs):
            d = _object_sdf_px(o, 64)
            owner[d < render.EDGE_PX] = -1          # band and everything covered
            owner[d <= -render.EDGE_PX] = k
        assert set(np.unique(owner[owner >= 0]).tolist()) == set(range(len(objs))), i


# ---------------------------------------------------------------- split files


def test_lowshot_split_files(tmp_path):
    paths = write_lowshot_splits(tmp_path)
    rel = sorted(os.path.relpath(p, tmp_path) for p in paths)
    assert rel == sorted([f"synthetic_subsets{s}/{k}imgs_class.txt" for s in (1, 2, 3)
                          for k in (1, 2, 5)] + ["synthetic_subsets1/1percent.txt"])
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == rel
    pool = SyntheticScenes("classification", "train")
    known = set(pool.names)

    def read(name):
        lines = (tmp_path / name).read_text().splitlines()
        assert len(lines) == len(set(lines)) and set(lines) <= known
        per_class = Counter(line.rsplit("_", 1)[0] for line in lines)
        return set(lines), per_class

    sets = {}
    for s in (1, 2, 3):
        for k in (1, 2, 5):
            sets[s, k], per_class = read(f"synthetic_subsets{s}/{k}imgs_class.txt")
            assert per_class == {c: k for c in pool.classes}
            assert sorted(sets[s, k]) == sorted(synthetic.lowshot_split_names(s, k))
        assert sets[s, 1] < sets[s, 2] < sets[s, 5]     # nested within a seed
    assert sets[1, 5] != sets[2, 5] != sets[3, 5]
    one_pct, per_class = read("synthetic_subsets1/1percent.txt")
    assert per_class == {c: 13 for c in pool.classes} and len(one_pct) == len(pool) // 100
    before = {p: open(p).read() for p in paths}
    assert write_lowshot_splits(tmp_path) == paths                   # deterministic rewrite
    assert {p: open(p).read() for p in paths} == before


# ---------------------------------------------------------------- difficulty


def _orientation_spectrum(images, bins=36, harmonics=10):
    """Rotation- and translation-invariant shape cue: |FFT| of the gradient-orientation
    histogram (n-fold symmetries of the outline)."""
    g = images.mean(3)
    gy, gx = np.gradient(g, axis=(1, 2))
    mag, b = np.hypot(gx, gy), ((np.arctan2(gy, gx) + np.pi) / (2 * np.pi) * bins).astype(int)
    hist = np.stack([np.bincount(bi.ravel() % bins, mi.ravel(), bins) for bi, mi in zip(b, mag)])
    return np.abs(np.fft.rfft(hist / hist.sum(1, keepdims=True), axis=1))[:, :harmonics]


def _ridge_probe(f_tr, y_tr, f_te, y_te, lam=0.1):
    """Linear probe in closed form (one-hot ridge regression on standardised features):
    deterministic and fast, unlike an iterative solver on two busy cores."""
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    a, b = ((np.hstack([(f - mu) / sd, np.ones((len(f), 1))]) for f in (f_tr, f_te)))
    w = np.linalg.solve(a.T @ a + lam * len(a) * np.eye(a.shape[1]), a.T @ np.eye(16)[y_tr])
    return float(((b @ w).argmax(1) == y_te).mean())


def test_difficulty_linear_probes():
    """Linear probes on cheap features: above chance, far below 100 % (measured: raw pixels
    9.8 %, orientation spectrum 16.8 %, chance 6.25 %)."""
    train = SyntheticScenes("classification", "train")
    test = SyntheticScenes("classification", "test")
    assert len(train.classes) == 16
    tr_ids = np.concatenate([np.arange(40) + c * 1300 for c in range(16)])
    te_ids = np.arange(0, len(test), 2)
    x_tr = np.stack([np.asarray(train.load_image(i)) for i in tr_ids]).astype(np.float32) / 255
    x_te = np.stack([np.asarray(test.load_image(i)) for i in te_ids]).astype(np.float32) / 255
    y_tr, y_te = train.targets[tr_ids], test.targets[te_ids]
    pool = lambda x: x.reshape(len(x), 8, 8, 8, 8, 3).mean((2, 4)).reshape(len(x), -1)
    raw = _ridge_probe(pool(x_tr), y_tr, pool(x_te), y_te)
    shape = _ridge_probe(_orientation_spectrum(x_tr), y_tr, _orientation_spectrum(x_te), y_te)
    print(f"linear probe accuracy: raw 8x8 pixels {raw:.3f}, orientation spectrum {shape:.3f}")
    assert raw < 0.5, "raw pixels nearly solve it: colour or position leaks the class"
    assert 2 / 16 < shape < 0.95
