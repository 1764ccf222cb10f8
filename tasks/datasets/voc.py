"""PASCAL VOC readers: VOC2007 multi-label classification and VOC2012 semantic segmentation.

Layout (the official tarballs)::

    VOCdevkit/VOC2007/JPEGImages/<name>.jpg
    VOCdevkit/VOC2007/Annotations/<name>.xml
    VOCdevkit/VOC2007/ImageSets/Main/{trainval,test}.txt
    VOCdevkit/VOC2012/SegmentationClass/<name>.png          (palette PNG, index = class)
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
    VOCdevkit/VOC2012/SegmentationClassAug/<name>.png       (optional, SBD-augmented masks)
    VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt  (optional, 10,582 names)

``root`` may be the folder that contains ``VOCdevkit``, ``VOCdevkit`` itself, or the
``VOC2007`` / ``VOC2012`` folder itself.

Everything listed by the split file is checked when the dataset is built (annotation
parsed, image present); a problem raises ``FileNotFoundError`` / ``ValueError`` naming the
file -- nothing is skipped silently. Images and masks are read lazily.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image
from . import (IGNORE_INDEX, BadInputError, MissingFileError, NamedImages, find_dataset_folder, load_rgb, read_label_png,
               read_name_list)

__all__ = ["VOC_CLASSES", "VOC_SEG_CLASSES", "VOC2007MultiLabel", "VOC2012Segmentation", "resolve_voc_dir"]

#: The 20 VOC object classes in the standard (devkit) order.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
#: Segmentation classes: background (index 0) + the 20 object classes (indices 1..20).
VOC_SEG_CLASSES = ("background",) + VOC_CLASSES



def resolve_voc_dir(root: str, year: str) -> str:
    """Return the real path of ``VOC<year>`` given ``root`` (see the module docstring)."""
    name = f"VOC{year}"
    candidates = [os.path.join("VOCdevkit", name), name]
    base = os.path.basename(os.path.normpath(os.path.abspath(os.path.expanduser(str(root or "")))))
    if not (re.fullmatch(r"VOC\d{4}", base) and base != name):  # never accept another year's folder
        candidates.append("")
    return find_dataset_folder(root, name, candidates, ("JPEGImages", "ImageSets"),
                               f" (pass the folder containing VOCdevkit, VOCdevkit itself, or {name} itself)")


def _image_name(line: str) -> str:
    """The image name of a line of a VOC list: the line itself, or for a DeepLab-style pair such as
    ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` the stem of its first path."""
    tok = line.split()[0]
    if "/" in tok or tok.lower().endswith((".jpg", ".jpeg", ".png")):
        tok = os.path.splitext(os.path.basename(tok))[0]
    return tok


def read_voc_list(path: str) -> list[str]:
    """Image names of a VOC split list (`ImageSets/*/<split>.txt`, or SBD's `train_aug.txt`)."""
    return read_name_list(path, _image_name)


def _check_files_exist(folder: str, names: list[str], ext: str, what: str, split_file: str) -> None:
    if not os.path.isdir(folder):
        raise MissingFileError(f"{what} folder {folder} does not exist")
    present = set(os.listdir(folder))
    missing = [n for n in names if n + ext not in present]
    if missing:
        first = os.path.join(folder, missing[0] + ext)
        raise MissingFileError(
            f"{len(missing)} {what} file(s) listed in {split_file} are missing, e.g. {first}"
            + (f" (also {', '.join(m + ext for m in missing[1:4])}...)" if len(missing) > 1 else "")
        )


def parse_voc_xml(path: str) -> list[tuple[str, bool]]:
    """Objects of a VOC annotation file as ``[(class_name, difficult), ...]``.

    A missing ``<difficult>`` tag means 0 (some VOC2012 objects lack it). Raises
    ``FileNotFoundError`` / ``ValueError`` naming ``path`` when the file is missing, is not
    well-formed XML, is not an ``<annotation>``, or has an object without a known class name
    or with a ``<difficult>`` value other than 0/1.
    """
    try:
        tree = ET.parse(path)
    except FileNotFoundError:
        raise MissingFileError(f"VOC annotation {path} does not exist") from None
    except ET.ParseError as exc:
        raise BadInputError(f"malformed VOC annotation {path}: {exc}") from exc
    root = tree.getroot()
    if root.tag != "annotation":
        raise BadInputError(f"malformed VOC annotation {path}: root element is <{root.tag}>, expected <annotation>")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = obj.findtext("name")
        if name is None or not name.strip():
            raise BadInputError(f"malformed VOC annotation {path}: object #{k} has no <name>")
        name = name.strip()
        if name not in VOC_CLASSES:
            raise BadInputError(f"malformed VOC annotation {path}: object #{k} has unknown class {name!r}")
        diff = obj.findtext("difficult")
        diff = "0" if diff is None else diff.strip()
        if diff not in ("0", "1"):
            raise BadInputError(f"malformed VOC annotation {path}: object #{k} has <difficult>{diff}</difficult>")
        objects.append((name, diff == "1"))
    return objects


class VOC2007MultiLabel(NamedImages):
    """VOC2007 multi-label classification (20 classes).

    Attributes:
        classes: the 20 class names (:data:`VOC_CLASSES` order).
        names: image ids in split-file order.
        targets: ``float32 [N, 20]``; 1 if the image has at least one *non-difficult*
            object of the class.
        ignore: ``bool [N, 20]``; True if the image has objects of the class but all of them
            are difficult -- such entries are neither positive nor negative (VOC devkit).
        identity: ``"voc2007/<split>@<real path of VOC2007>"``.
    """

    def __init__(self, root: str, split: str = "trainval"):
        if split not in ("trainval", "test"):
            raise BadInputError(f"VOC2007MultiLabel: split must be 'trainval' or 'test', got {split!r}")
        self.split = split
        self.voc_dir = resolve_voc_dir(root, "2007")
        self.image_dir = os.path.join(self.voc_dir, "JPEGImages")
        self.ann_dir = os.path.join(self.voc_dir, "Annotations")
        split_file = os.path.join(self.voc_dir, "ImageSets", "Main", f"{split}.txt")
        self.classes = list(VOC_CLASSES)
        self.names = read_voc_list(split_file)
        _check_files_exist(self.image_dir, self.names, ".jpg", "image", split_file)
        cls_idx = {c: i for i, c in enumerate(self.classes)}
        n, c = len(self.names), len(self.classes)
        self.targets = np.zeros((n, c), dtype=np.float32)
        has_difficult = np.zeros((n, c), dtype=np.bool_)
        for i, name in enumerate(self.names):
            for cls, difficult in parse_voc_xml(os.path.join(self.ann_dir, name + ".xml")):
                if difficult:
                    has_difficult[i, cls_idx[cls]] = True
                else:
                    self.targets[i, cls_idx[cls]] = 1.0
        self.ignore = has_difficult & (self.targets == 0)
        self.identity = f"voc2007/{split}@{self.voc_dir}"

    def image_path(self, i: int) -> str:
        return os.path.join(self.image_dir, self.names[i] + ".jpg")

    def load_image(self, i: int) -> Image.Image:
        return load_rgb(self.image_path(i))

    def __repr__(self) -> str:
        return f"VOC2007MultiLabel({self.identity!r}, n={len(self)})"


class VOC2012Segmentation(NamedImages):
    """VOC2012 semantic segmentation (21 classes incl. background, 255 = ignore).

    ``split="train"`` (1,464 images) or ``"val"`` (1,449). With ``use_sbd_aug=True`` (train
    only) the SBD-augmented list ``ImageSets/Segmentation/train_aug.txt`` and masks from
    ``SegmentationClassAug/`` are used instead (the usual 10,582-image "trainaug" set); an
    error is raised if they are absent or if the list overlaps ``val.txt``.

    Masks are palette (or grayscale) PNGs whose pixel values are the class indices; they are
    read without RGB conversion. :meth:`load_mask` returns ``uint8 [H, W]`` with values in
    0..20 or 255 and raises (naming the file) on any other value or on an RGB mask.
    """

    num_classes = len(VOC_SEG_CLASSES)

    def __init__(self, root: str, split: str = "train", use_sbd_aug: bool = False):
        if split not in ("train", "val"):
            raise BadInputError(f"VOC2012Segmentation: split must be 'train' or 'val', got {split!r}")
        if use_sbd_aug and split != "train":
            raise BadInputError("VOC2012Segmentation: use_sbd_aug=True only applies to split='train'")
        self.split = split
        self.use_sbd_aug = bool(use_sbd_aug)
        self.voc_dir = resolve_voc_dir(root, "2012")
        self.image_dir = os.path.join(self.voc_dir, "JPEGImages")
        sets_dir = os.path.join(self.voc_dir, "ImageSets", "Segmentation")
        if use_sbd_aug:
            split_file = os.path.join(sets_dir, "train_aug.txt")
            self.mask_dir = os.path.join(self.voc_dir, "SegmentationClassAug")
            for p in (split_file, self.mask_dir):
                if not os.path.exists(p):
                    raise MissingFileError(
                        f"use_sbd_aug=True but {p} does not exist: the SBD-augmented set needs "
                        "ImageSets/Segmentation/train_aug.txt and SegmentationClassAug/ inside VOC2012"
                    )
        else:
            split_file = os.path.join(sets_dir, f"{split}.txt")
            self.mask_dir = os.path.join(self.voc_dir, "SegmentationClass")
        self.classes = list(VOC_SEG_CLASSES)
        self.names = read_voc_list(split_file)
        if use_sbd_aug:
            val_file = os.path.join(sets_dir, "val.txt")
            if os.path.isfile(val_file):
                leak = sorted(set(self.names) & set(read_voc_list(val_file)))
                if leak:
                    raise BadInputError(
                        f"{split_file} contains {len(leak)} image(s) of the validation list {val_file}, "
                        f"e.g. {leak[:3]}"
                    )
        _check_files_exist(self.image_dir, self.names, ".jpg", "image", split_file)
        _check_files_exist(self.mask_dir, self.names, ".png", "mask", split_file)
        self.identity = f"voc2012/{'train_aug' if use_sbd_aug else split}@{self.voc_dir}"

    def image_path(self, i: int) -> str:
        return os.path.join(self.image_dir, self.names[i] + ".jpg")

    def mask_path(self, i: int) -> str:
        return os.path.join(self.mask_dir, self.names[i] + ".png")

    def load_image(self, i: int) -> Image.Image:
        return load_rgb(self.image_path(i))

    def load_mask(self, i: int) -> np.ndarray:
        path = self.mask_path(i)
        mode, mask = read_label_png(path)
        if mode not in ("P", "L") or mask.ndim != 2:
            raise BadInputError(
                f"mask {path} has PIL mode {mode!r}: expected a palette ('P') or grayscale ('L') PNG "
                "whose pixel values are class indices"
            )
        bad = (mask > self.num_classes - 1) & (mask != IGNORE_INDEX)
        if bad.any():
            raise BadInputError(
                f"mask {path} has values {np.unique(mask[bad])[:5].tolist()} outside 0..{self.num_classes - 1} "
                f"and {IGNORE_INDEX}"
            )
        return mask.astype(np.uint8)

    def __repr__(self) -> str:
        return f"VOC2012Segmentation({self.identity!r}, n={len(self)})"
