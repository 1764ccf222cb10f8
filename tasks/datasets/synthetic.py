"""Synthetic scenes: the embedded dataset, generated on the fly so every task runs offline.

Images are shapes (the class = shape family) with random colour, texture, position, scale,
rotation and mirroring, over muted textured backgrounds with a few small distractor fragments.
As in photos, a class also has a typical look (a hue and a surface pattern, see TYPICAL) that
most of its objects take: appearance is informative, shape decides.  (Version 1 had random
appearance, busier backgrounds and smaller objects; the tiny models shipped with the project
could not learn it within their CPU budget, see model_zoo/weights/README.md.)  One
generator gives three tasks: ``classification`` (one object), ``multilabel`` (1-4 objects,
target = classes present) and ``segmentation`` (1-4 objects, mask: 0 background, 1..C the
visible object's class, 255 a thin ignore band along object outlines, like VOC).  Later objects
occlude earlier ones, but never completely: the classes of a scene are exactly its mask's labels.

The generator (shapes, layouts, textures, rendering; deterministic to the byte) is
`tasks/datasets/synthetic_render.py`; this module is the dataset and its low-shot split lists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lowshot.model_zoo.files import atomic_write_text, digest

from .synthetic_render import (_TEX_CRC, CLASSES, SCENES, SPLITS, TASKS, TEST_PER_CLASS, TRAIN_PER_CLASS, VERSION,
                               _bank, _multilabel_targets, render_scene)

__all__ = ["SyntheticScenes", "write_lowshot_splits", "lowshot_split_names", "fraction_names", "one_percent_names",
           "render_scene", "CLASSES", "VERSION"]

LOWSHOT_SEEDS, LOWSHOT_SHOTS = (1, 2, 3), (1, 2, 5)


class SyntheticScenes:
    """One (task, split) of the embedded dataset; images are rendered on access."""

    def __init__(self, task="classification", split="train", image_size=64):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if int(image_size) < 32:   # below, thin shapes cannot keep a labelled core visible
            raise ValueError(f"image_size must be >= 32, got {image_size}")
        self.task, self.split, self.image_size = task, split, int(image_size)
        self.classes = list(CLASSES)
        self.per_class = TRAIN_PER_CLASS if split == "train" else TEST_PER_CLASS
        self._n = self.per_class * len(CLASSES) if task == "classification" else SCENES[split]
        crc = _bank()[2]
        # The content depends on the texture bank too: say so when it is not the reference one.
        tex = "" if crc == _TEX_CRC else f"+tex{crc:08x}"
        self.identity = f"synthetic-scenes-v{VERSION}{tex}/{task}/{split}/{self.image_size}px"
        self._names = self._index = None
        self._last = (None, None)

    def __len__(self):
        return self._n

    @property
    def names(self):
        if self._names is None:
            if self.task == "classification":
                self._names = [f"{c}_{n}.png" for c in self.classes for n in range(self.per_class)]
            else:
                self._names = [f"scene_{i}.png" for i in range(self._n)]
        return self._names

    @property
    def targets(self):
        if self.task == "classification":
            return np.arange(self._n, dtype=np.int64) // self.per_class
        if self.task == "segmentation":
            return None
        return _multilabel_targets(self.split, self.image_size)

    def index_of(self, name):
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.names)}
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"{name!r} is not an image of {self.identity} (its names run from "
                           f"{self.names[0]!r} to {self.names[-1]!r})") from None

    def _render(self, i):
        i = int(i)
        if not 0 <= i < self._n:
            raise IndexError(f"index {i} out of range for {self.identity} (len {self._n})")
        if self._last[0] != i:   # load_image then load_mask of the same i renders once
            self._last = (i, render_scene(self.task, self.split, i, self.image_size))
        return self._last[1]

    def fingerprint(self, indices, masks: bool = False) -> str:
        """The images are a pure function of `identity` and their index: their names say it all."""
        return digest([self.names[int(i)] for i in indices])

    def load_image(self, i):
        return Image.fromarray(self._render(i)[0], "RGB")

    def load_mask(self, i):
        if self.task != "segmentation":
            raise ValueError(f"load_mask needs task='segmentation', this is {self.identity}")
        return self._render(i)[1].copy()


# --- low-shot splits of the classification train pool, in the ImageNet split-file format

def _sample_per_class(key, k):
    """k train-pool names per class; the first k of a fixed per-class permutation, so the
    samples of one key are nested (k=1 within k=2 within k=5)."""
    out = []
    for c, name in enumerate(CLASSES):
        order = np.random.default_rng([VERSION, *key, c]).permutation(TRAIN_PER_CLASS)
        out += [f"{name}_{n}.png" for n in sorted(order[:k].tolist())]
    return out


def lowshot_split_names(seed, images_per_class):
    """File names of `images_per_class` train images per class for split seed 1, 2 or 3."""
    return _sample_per_class((100, int(seed)), int(images_per_class))


def fraction_names(fraction, seed=1):
    """`fraction` of each class of the train pool (seed 1, 1 %: 13 images per class, like ImageNet's
    1percent.txt)."""
    return _sample_per_class((101,) if seed == 1 else (101, int(seed)), round(fraction * TRAIN_PER_CLASS))


def one_percent_names():
    """1 % of the train pool (13 images per class), like ImageNet's 1percent.txt."""
    return fraction_names(0.01)


def write_lowshot_splits(directory, image_size=64):
    """Write synthetic_subsets{1,2,3}/{1,2,5}imgs_class.txt and synthetic_subsets1/1percent.txt
    (names of the classification train pool, one per line); return the written paths."""
    pool = SyntheticScenes("classification", "train", image_size)
    known = set(pool.names)
    directory, written = Path(directory), []
    jobs = [(directory / f"synthetic_subsets{s}" / f"{k}imgs_class.txt", lowshot_split_names(s, k))
            for s in LOWSHOT_SEEDS for k in LOWSHOT_SHOTS]
    jobs.append((directory / "synthetic_subsets1" / "1percent.txt", one_percent_names()))
    for path, names in jobs:
        assert known.issuperset(names), path
        atomic_write_text(path, "".join(name + "\n" for name in names))
        written.append(str(path))
    return written
