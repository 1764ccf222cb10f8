"""ADE20K (SceneParsing / ADEChallengeData2016) semantic segmentation reader, 150 classes.

Layout::

    ADEChallengeData2016/images/<split>/<name>.jpg
    ADEChallengeData2016/annotations/<split>/<name>.png     (grayscale, 0 = "other", 1..150)

``root`` may be the folder containing ``ADEChallengeData2016`` or that folder itself.

Labels follow mmsegmentation's ``reduce_zero_label=True``: raw 0 ("other objects") becomes
255 (ignore) and raw ``v`` in 1..150 becomes ``v - 1``, so train ids are 0..149. The 150
class names are mmsegmentation's ``ADE20KDataset`` names in the same order (with the
trailing space of ``'bed '`` removed).

Images and annotations are matched by file stem when the dataset is built: an image without
its annotation (or an annotation without its image) raises ``FileNotFoundError`` naming the
file. Masks are read lazily; a raw value above 150 raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from . import (IGNORE_INDEX, BadInputError, MissingFileError, NamedImages, find_dataset_folder, is_hidden, load_rgb,
               read_label_png)

__all__ = ["ADE20K_CLASSES", "ADE20KSegmentation", "reduce_zero_label"]

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
assert len(ADE20K_CLASSES) == 150



def reduce_zero_label(raw: np.ndarray) -> np.ndarray:
    """mmsegmentation's ``reduce_zero_label``: 0 -> 255, v -> v - 1 (uint8)."""
    raw = np.asarray(raw).astype(np.int64)
    out = raw - 1
    out[raw == 0] = IGNORE_INDEX
    return out.astype(np.uint8)


class ADE20KSegmentation(NamedImages):
    """ADE20K semantic segmentation; ``split="training"`` (20,210) or ``"validation"`` (2,000).

    Attributes: ``classes`` (150 names, no background class), ``num_classes`` (150),
    ``names`` (sorted file stems), ``identity`` (``"ade20k/<split>@<real path>"``).
    :meth:`load_mask` returns ``uint8 [H, W]`` train ids (0..149, 255 = ignore).
    """

    num_classes = len(ADE20K_CLASSES)

    def __init__(self, root: str, split: str = "training"):
        if split not in ("training", "validation"):
            raise BadInputError(f"ADE20KSegmentation: split must be 'training' or 'validation', got {split!r}")
        self.split = split
        self.ade_dir = find_dataset_folder(root, "ADEChallengeData2016", ["ADEChallengeData2016", ""],
                                           ("images", "annotations"))
        self.image_dir = os.path.join(self.ade_dir, "images", split)
        self.mask_dir = os.path.join(self.ade_dir, "annotations", split)
        for d in (self.image_dir, self.mask_dir):
            if not os.path.isdir(d):
                raise MissingFileError(f"ADE20K folder {d} does not exist")
        # stem -> file name as on disk
        self._image_files = {os.path.splitext(f)[0]: f for f in os.listdir(self.image_dir)
                             if f.lower().endswith(".jpg") and not is_hidden(f)}
        self._mask_files = {os.path.splitext(f)[0]: f for f in os.listdir(self.mask_dir)
                            if f.lower().endswith(".png") and not is_hidden(f)}
        images, masks = set(self._image_files), set(self._mask_files)
        if not images:
            raise MissingFileError(f"ADE20K folder {self.image_dir} contains no .jpg image")
        no_mask = sorted(images - masks)
        if no_mask:
            raise MissingFileError(
                f"{len(no_mask)} ADE20K image(s) have no annotation, e.g. {os.path.join(self.image_dir, no_mask[0] + '.jpg')} "
                f"(expected {os.path.join(self.mask_dir, no_mask[0] + '.png')})"
            )
        no_image = sorted(masks - images)
        if no_image:
            raise MissingFileError(
                f"{len(no_image)} ADE20K annotation(s) have no image, e.g. {os.path.join(self.mask_dir, no_image[0] + '.png')} "
                f"(expected {os.path.join(self.image_dir, no_image[0] + '.jpg')})"
            )
        self.names = sorted(images)
        self.classes = list(ADE20K_CLASSES)
        self.identity = f"ade20k/{split}@{self.ade_dir}"

    def image_path(self, i: int) -> str:
        return os.path.join(self.image_dir, self._image_files[self.names[i]])

    def mask_path(self, i: int) -> str:
        return os.path.join(self.mask_dir, self._mask_files[self.names[i]])

    def load_image(self, i: int) -> Image.Image:
        return load_rgb(self.image_path(i))

    def load_mask(self, i: int) -> np.ndarray:
        path = self.mask_path(i)
        mode, raw = read_label_png(path)
        if raw.ndim != 2:
            raise BadInputError(f"annotation {path} has PIL mode {mode!r} and shape {raw.shape}: expected a single-channel PNG")
        if raw.max(initial=0) > self.num_classes:
            raise BadInputError(
                f"annotation {path} has raw values up to {int(raw.max())}; ADE20K labels are 0..{self.num_classes}"
            )
        return reduce_zero_label(raw)

    def __repr__(self) -> str:
        return f"ADE20KSegmentation({self.identity!r}, n={len(self)})"
