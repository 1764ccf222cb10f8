"""ImageNet-1K in the usual ImageFolder layout, and the official low-shot split files.

Layout: `<root>/train/<wnid>/*.JPEG`, `<root>/val/<wnid>/*.JPEG`. Classes are the sorted wnids of `train/`
(torchvision ImageFolder's convention, which MSN's evaluation uses). The split files list training image
file names `<wnid>_<n>.JPEG`, one per line; MSN's three seeds of 1/2/5 images per class and SimCLR's 1 %.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from . import MissingFileError, NamedImages, SplitError, is_hidden, load_rgb, read_name_list

IMG_EXTENSIONS = (".jpeg", ".jpg", ".png")
_MSN = "https://raw.githubusercontent.com/facebookresearch/msn/main"


@dataclass(frozen=True)
class SplitFile:
    split_id: str  # e.g. "5img-seed3", "1percent"
    relpath: str  # path under the split directory, as published
    sha256: str
    images_per_class: int | None  # None for the 1 % list (at most 13 per class)

    @property
    def url(self) -> str:
        return f"{_MSN}/{self.relpath}"


# sha256 of the published files (checked on download and on every read of a downloaded copy).
IMAGENET_SPLITS: dict[str, SplitFile] = {s.split_id: s for s in [
    SplitFile("1img-seed1", "imagenet_subsets1/1imgs_class.txt", "ffa4f960419ce75479a2af80d632c7a98756b624aad2399a334a3549584ab426", 1),
    SplitFile("2img-seed1", "imagenet_subsets1/2imgs_class.txt", "9b0c2d1957ad7a1135773a868afbaeaa6d50d30b4ec54d1b0bf759879a3c0933", 2),
    SplitFile("5img-seed1", "imagenet_subsets1/5imgs_class.txt", "f8daf7e637fafe92e7567016db43e6db2c816f7bbf8ce60f5cf59c0788f12890", 5),
    SplitFile("1img-seed2", "imagenet_subsets2/1imgs_class.txt", "7f13beaba20a6e6413cc98bcaefb084961d4c7f1938a3b7e2f20464d5575cf43", 1),
    SplitFile("2img-seed2", "imagenet_subsets2/2imgs_class.txt", "35b93fb0d809b17a30420a507b2fd356f22152671567f4b9704735e1e379b440", 2),
    SplitFile("5img-seed2", "imagenet_subsets2/5imgs_class.txt", "284603d071f36b298c893d2df8fda2d1a110f680a25d0f8b1faa9acea20fcc04", 5),
    SplitFile("1img-seed3", "imagenet_subsets3/1imgs_class.txt", "d77d56527da4842b96a7bbbc14f846c4e637a95b43df592e11770d26997b5b5f", 1),
    SplitFile("2img-seed3", "imagenet_subsets3/2imgs_class.txt", "400ae5a31e01bc1a034c392c2bdbdfaab45699dc4f59392e65acfcaae172cf1b", 2),
    # Misnamed upstream: seed 3's *5*-images-per-class split is called 3imgs_class.txt (5000 lines).
    SplitFile("5img-seed3", "imagenet_subsets3/3imgs_class.txt", "eaab6e72d1ea83c3624f5d28a8c217568ea138ea7c5cacfa0cdcd206b5fd8e24", 5),
    SplitFile("1percent", "imagenet_subsets1/1percent.txt", "71e82a48ba78252683ae334c4d019ebd5c6e855b9599c1389fbe83eb9549cf17", None),
]}


def class_of(file_name: str) -> str:
    """`n01440764_10026.JPEG` -> `n01440764` (also `disc_12.png` -> `disc`)."""
    stem = Path(file_name).stem
    if "_" not in stem:
        raise SplitError(f"file name {file_name!r} does not have the form <class>_<n>.<ext>")
    return stem.rsplit("_", 1)[0]


def read_split(path: str | Path, classes: list[str], images_per_class: int | None = None) -> list[str]:
    """Read a split file and check it against the dataset's classes (and the per-class count when known)."""
    names = read_name_list(path)
    known = set(classes)
    unknown = sorted({class_of(n) for n in names} - known)
    if unknown:
        raise SplitError(f"split file {path} names {len(unknown)} class(es) not in the dataset: {unknown[:5]}")
    if images_per_class is not None:
        counts: dict[str, int] = {}
        for n in names:
            counts[class_of(n)] = counts.get(class_of(n), 0) + 1
        bad = [c for c in classes if counts.get(c, 0) != images_per_class]
        if bad:
            raise SplitError(f"split file {path} should have {images_per_class} image(s) for each of the "
                             f"{len(classes)} classes; {len(bad)} class(es) differ, e.g. {bad[0]} has "
                             f"{counts.get(bad[0], 0)}")
    return names


def _list_images(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_file() and not is_hidden(e.name)
                      and e.name.lower().endswith(IMG_EXTENSIONS))


class ImageFolderSplit(NamedImages):
    """One split (`train` or `val`) of an ImageFolder dataset, restricted to a list of file names or all files.

    Attributes match the other datasets of the suite: classes, names, targets, load_image(i), identity.
    """

    def __init__(self, root: str | Path, split: str, names: list[str] | None = None,
                 classes: list[str] | None = None):
        self.root = Path(root).expanduser().resolve()
        self.folder = self.root / split
        if not self.folder.is_dir():
            raise MissingFileError(f"{self.folder} does not exist: expected the ImageFolder layout "
                                    f"<root>/{split}/<class>/<image>")
        self.split = split
        found = self.class_folders(self.folder)
        self.classes = classes or found
        if not self.classes:
            raise SplitError(f"{self.folder} has no class folders")
        extra = sorted(set(found) - set(self.classes))
        if extra:
            raise SplitError(f"{self.folder} has class folder(s) that the training classes lack: {extra[:5]}")
        index = {c: i for i, c in enumerate(self.classes)}
        if names is None:
            names, empty = [], []
            for c in self.classes:
                files = _list_images(self.folder / c) if (self.folder / c).is_dir() else []
                if not files:
                    empty.append(c)
                names += [f"{c}/{f}" for f in files]
            if empty:
                raise SplitError(f"{self.folder}: {len(empty)} class folder(s) are empty or missing, "
                                 f"e.g. {self.folder / empty[0]}")
            self.relpaths = names
        else:
            self.relpaths = [f"{class_of(n)}/{n}" for n in names]
            missing = [p for p in self.relpaths if not (self.folder / p).is_file()]
            if missing:
                raise SplitError(f"{len(missing)} image(s) listed in the split are missing under {self.folder}, "
                                 f"e.g. {self.folder / missing[0]}")
        self.names = [p.split("/", 1)[1] for p in self.relpaths]
        self.targets = [index[p.split("/", 1)[0]] for p in self.relpaths]
        self.identity = f"imagefolder:{self.root}/{split}"

    @staticmethod
    def class_folders(folder: Path) -> list[str]:
        if not Path(folder).is_dir():
            raise MissingFileError(f"{folder} does not exist: expected the ImageFolder layout <root>/<split>/<class>/<image>")
        return sorted(d.name for d in os.scandir(folder) if d.is_dir() and not is_hidden(d.name))

    def image_path(self, i: int) -> Path:
        return self.folder / self.relpaths[i]

    def load_image(self, i: int) -> Image.Image:
        return load_rgb(self.image_path(i))
