"""COCO 2014 multi-label classification reader (80 classes), without pycocotools.

Layout::

    <root>/annotations/instances_<split>.json
    <root>/<split>/<file_name>            (e.g. train2014/COCO_train2014_000000000009.jpg)

Conventions:

- Classes are the 80 instance categories in ascending category-id order (ids 1..90 with
  gaps), so class index ``c`` is the ``c``-th smallest category id.
- An image is positive for a category if it has *any* annotation of it -- ``iscrowd=1``
  annotations count as positives too (a crowd of people still means "person is in the
  image"; COCO has no "difficult" flag, so ``ignore`` is all False).
- Images listed in ``images`` without any annotation (about 1 % of COCO) are kept with an
  all-zero target: they are valid COCO images and negatives for every class.
- Images are ordered by ascending image id (independent of the JSON order);
  ``names`` are the file-name stems (``COCO_train2014_000000000009``) and ``image_ids``
  the integer ids.

A malformed JSON, a missing key, an unknown image/category id in an annotation, a category
count other than 80 or an image file missing from ``<split>/`` raise ``ValueError`` /
``FileNotFoundError`` naming the file. Note that ``json.load`` of
``instances_train2014.json`` takes a few seconds and a couple of GB of memory.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image
from . import BadInputError, MissingFileError, NamedImages, load_rgb

__all__ = ["COCOMultiLabel", "NUM_COCO_CLASSES"]

NUM_COCO_CLASSES = 80


def _require(d, key, path, where):
    if not isinstance(d, dict):
        raise BadInputError(f"malformed COCO annotation file {path}: {where} is not a JSON object")
    if key not in d:
        raise BadInputError(f"malformed COCO annotation file {path}: {where} has no {key!r} key")
    return d[key]


def _require_int(d, key, path, where):
    v = _require(d, key, path, where)
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadInputError(f"malformed COCO annotation file {path}: {where}[{key!r}] = {v!r} is not an integer")
    return v


class COCOMultiLabel(NamedImages):
    """COCO multi-label classification; see the module docstring for the conventions.

    Attributes: ``classes`` (80 names), ``category_ids`` (80 ints, ascending), ``names``,
    ``image_ids``, ``targets`` (``float32 [N, 80]``), ``ignore`` (``bool [N, 80]``, all
    False), ``identity`` (``"coco/<split>@<real path of root>"``).
    """

    def __init__(self, root: str, split: str = "train2014"):
        if split not in ("train2014", "val2014"):
            raise BadInputError(f"COCOMultiLabel: split must be 'train2014' or 'val2014', got {split!r}")
        root_abs = os.path.abspath(os.path.expanduser(str(root)))
        if not os.path.isdir(root_abs):
            raise MissingFileError(f"COCO root {root_abs} does not exist or is not a directory")
        self.root = os.path.realpath(root_abs)
        self.split = split
        self.ann_file = os.path.join(self.root, "annotations", f"instances_{split}.json")
        self.image_dir = os.path.join(self.root, split)
        path = self.ann_file
        if not os.path.isfile(path):
            raise MissingFileError(f"COCO annotation file {path} does not exist")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadInputError(f"malformed COCO annotation file {path}: {exc}") from exc

        images = _require(data, "images", path, "the top level")
        anns = _require(data, "annotations", path, "the top level")
        cats = _require(data, "categories", path, "the top level")
        for key, val in (("images", images), ("annotations", anns), ("categories", cats)):
            if not isinstance(val, list):
                raise BadInputError(f"malformed COCO annotation file {path}: {key!r} is not a list")

        cat_names = {}
        for k, cat in enumerate(cats):
            cid = _require_int(cat, "id", path, f"categories[{k}]")
            name = _require(cat, "name", path, f"categories[{k}]")
            if cid in cat_names:
                raise BadInputError(f"malformed COCO annotation file {path}: category id {cid} appears twice")
            cat_names[cid] = str(name)
        if len(cat_names) != NUM_COCO_CLASSES:
            raise BadInputError(
                f"COCO annotation file {path} has {len(cat_names)} categories, expected {NUM_COCO_CLASSES} "
                "(is it an instances_*.json file?)"
            )
        self.category_ids = sorted(cat_names)
        self.classes = [cat_names[c] for c in self.category_ids]
        cat_index = {cid: i for i, cid in enumerate(self.category_ids)}

        file_names = {}
        for k, img in enumerate(images):
            iid = _require_int(img, "id", path, f"images[{k}]")
            fname = _require(img, "file_name", path, f"images[{k}]")
            if not isinstance(fname, str) or not fname:
                raise BadInputError(f"malformed COCO annotation file {path}: images[{k}]['file_name'] = {fname!r}")
            if iid in file_names:
                raise BadInputError(f"malformed COCO annotation file {path}: image id {iid} appears twice")
            file_names[iid] = fname
        if not file_names:
            raise BadInputError(f"COCO annotation file {path} lists no images")
        self.image_ids = np.array(sorted(file_names), dtype=np.int64)
        self.file_names = [file_names[int(i)] for i in self.image_ids]
        self.names = [os.path.splitext(os.path.basename(f))[0] for f in self.file_names]
        if len(set(self.names)) != len(self.names):
            raise BadInputError(f"COCO annotation file {path}: several images share a file name")
        row = {int(iid): r for r, iid in enumerate(self.image_ids)}

        self.targets = np.zeros((len(self.names), len(self.classes)), dtype=np.float32)
        for k, ann in enumerate(anns):
            iid = _require_int(ann, "image_id", path, f"annotations[{k}]")
            cid = _require_int(ann, "category_id", path, f"annotations[{k}]")
            if iid not in row:
                raise BadInputError(f"malformed COCO annotation file {path}: annotations[{k}] refers to unknown image id {iid}")
            if cid not in cat_index:
                raise BadInputError(
                    f"malformed COCO annotation file {path}: annotations[{k}] refers to unknown category id {cid}"
                )
            self.targets[row[iid], cat_index[cid]] = 1.0  # iscrowd annotations count as positives
        self.ignore = np.zeros(self.targets.shape, dtype=np.bool_)

        if not os.path.isdir(self.image_dir):
            raise MissingFileError(f"COCO image folder {self.image_dir} does not exist")
        present = set(os.listdir(self.image_dir))
        missing = [f for f in self.file_names if f not in present]
        if missing:
            raise MissingFileError(
                f"{len(missing)} image(s) listed in {path} are missing from {self.image_dir}, "
                f"e.g. {os.path.join(self.image_dir, missing[0])}"
            )
        self.identity = f"coco/{split}@{self.root}"

    def image_path(self, i: int) -> str:
        return os.path.join(self.image_dir, self.file_names[i])

    def load_image(self, i: int) -> Image.Image:
        return load_rgb(self.image_path(i))

    def __repr__(self) -> str:
        return f"COCOMultiLabel({self.identity!r}, n={len(self)})"
