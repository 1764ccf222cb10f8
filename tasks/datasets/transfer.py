"""Readers of the transfer datasets in their usual on-disk formats: (train pool, test set) of one dataset.

Each reader takes the dataset's own folder (found under `--data-root` by its usual name, e.g. `oxford-iiit-pet/`)
and returns two image sources with the attributes every task reads: `names` (paths relative to the folder, or
`<file>:<row>` for images stored in array files), `targets` [N], `classes`, `identity`, `load_image(i)` and
`fingerprint(indices)`. torchvision's own dataset classes read the annotations (`download=False`: the user's
copy) wherever they accept a copy without md5 sums; CIFAR (pickled batches, md5-checked by torchvision),
Flowers-102 (md5-checked .mat files), SUN397 (torchvision ignores the official partitions) and PCam (HDF5, read
lazily here) have small readers of the same format. Datasets without an official split (Caltech-101, EuroSAT) are
split by a rule that does not depend on a random generator: within each class, images in the order of the sha256
of their file name.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from lowshot.model_zoo.files import digest

from . import BadInputError, MissingFileError, NamedImages, load_rgb


class FileImages(NamedImages):
    """Images stored one per file: every listed file is checked to exist when the dataset is read."""

    def __init__(self, identity: str, folder: Path, paths, targets, classes):
        self.folder, self.identity, self.classes = Path(folder), identity, list(classes)
        self.paths = [Path(p) for p in paths]
        self.names = [p.relative_to(self.folder).as_posix() for p in self.paths]
        self.targets = _labels(identity, targets)
        if not self.paths:
            raise BadInputError(f"{identity}: the annotations list no image")
        missing = [p for p in self.paths if not p.is_file()]
        if missing:
            raise MissingFileError(f"{identity}: {len(missing)} listed image(s) are missing, e.g. {missing[0]}")
        _check_targets(identity, self.targets, self.classes)

    def image_path(self, i: int) -> Path:
        return self.paths[i]

    def load_image(self, i: int):
        return load_rgb(self.paths[i])

    def subset(self, indices, identity: str) -> "FileImages":
        idx = np.asarray(indices, np.int64)
        return FileImages(identity, self.folder, [self.paths[i] for i in idx], self.targets[idx], self.classes)


class ArrayImages(NamedImages):
    """Images stored as rows of array files (CIFAR batches, PCam HDF5): `rows(i)` gives image i as uint8 [H, W, 3].
    The fingerprint is the images' names and the size and modification time of the array files."""

    def __init__(self, identity: str, names, targets, classes, files, rows):
        self.identity, self.names, self.classes = identity, list(names), list(classes)
        self.targets = _labels(identity, targets)
        self.files, self._rows = [Path(f) for f in files], rows
        _check_targets(identity, self.targets, self.classes)

    def fingerprint(self, indices, masks: bool = False) -> str:
        stats = [[str(f), os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in self.files]
        return digest({"files": stats, "images": [self.names[int(i)] for i in np.asarray(indices, np.int64)]})

    def load_image(self, i: int):
        return Image.fromarray(np.ascontiguousarray(self._rows(int(i))), "RGB")


def _labels(identity: str, targets) -> np.ndarray:
    """Labels as int64: whole numbers only (a string, float or bool label is an error naming the dataset)."""
    labels = np.asarray(targets)
    if labels.size == 0:
        return labels.astype(np.int64).reshape(-1)
    if labels.dtype.kind not in "iu":
        first = next((t for t in labels.reshape(-1) if not isinstance(t, (int, np.integer)) or isinstance(t, bool)),
                     labels.reshape(-1)[0])
        raise BadInputError(f"{identity}: labels must be whole numbers, found {first!r} ({labels.dtype})")
    return labels.astype(np.int64)


def _check_targets(identity, targets, classes) -> None:
    if targets.ndim != 1 or (len(targets) and (targets.min() < 0 or targets.max() >= len(classes))):
        raise BadInputError(f"{identity}: labels outside 0..{len(classes) - 1}")


def _torchvision(cls, root: Path, **kwargs):
    """A torchvision dataset over the user's copy (never downloaded); its complaints name the folder."""
    try:
        return cls(str(root), download=False, **kwargs)
    except (RuntimeError, OSError, ValueError, KeyError, IndexError) as e:
        raise BadInputError(f"{cls.__name__}: cannot read the dataset under {root}: {e}") from None


def by_name_digest(names, targets, n_train=None, train_fraction=None) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of a dataset without an official split: within each class, images ordered by the
    sha256 of their name; the first `n_train` (or `train_fraction` of the class, rounded) go to train."""
    targets = np.asarray(targets)
    train, test = [], []
    for c in np.unique(targets):
        members = sorted(np.flatnonzero(targets == c), key=lambda i: hashlib.sha256(names[i].encode()).hexdigest())
        k = n_train if n_train is not None else int(round(train_fraction * len(members)))
        train += members[:k]
        test += members[k:]
    return np.sort(np.array(train, np.int64)), np.sort(np.array(test, np.int64))


# --- small readers of formats torchvision reads only with md5 sums (or not at all) -------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR batches hold dicts of lists, bytes and numpy arrays: nothing else is unpickled (`_codecs.encode`:
    how protocol-2 pickles written by Python 3 store bytes)."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise MissingFileError(f"CIFAR batch {path} does not exist")
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(io.BufferedReader(f), encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError) as e:  # a damaged pickle fails in many ways
        raise BadInputError(f"cannot read CIFAR batch {path}: {e}") from None
    if not isinstance(batch, dict):
        raise BadInputError(f"CIFAR batch {path}: unpickles to a {type(batch).__name__}, not a dict of "
                            "data and labels")
    return batch


def _names(path: Path, key: bytes) -> list[str]:
    """The class names stored under `key` in a CIFAR meta file (a list of bytes)."""
    names = _unpickle(path).get(key)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise BadInputError(f"CIFAR meta file {path}: {key.decode()} is not a list of class names")
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def _cifar_split(folder: Path, files, label_key: bytes, classes, identity):
    data, labels, names = [], [], []
    for name in files:
        batch = _unpickle(folder / name)
        try:
            x = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            y = list(batch[label_key])
        except (KeyError, ValueError, TypeError) as e:
            raise BadInputError(f"CIFAR batch {folder / name}: not a CIFAR python batch ({type(e).__name__}: {e})") \
                from None
        if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in y):
            wrong = next(t for t in y if not isinstance(t, (int, np.integer)) or isinstance(t, bool))
            raise BadInputError(f"CIFAR batch {folder / name}: labels must be whole numbers, found {wrong!r}")
        if len(y) != len(x):
            raise BadInputError(f"CIFAR batch {folder / name}: {len(x)} images but {len(y)} labels")
        data.append(x)
        labels += y
        names += [f"{name}:{i}" for i in range(len(x))]
    images = np.concatenate(data)
    return ArrayImages(identity, names, labels, classes, [folder / f for f in files], images.__getitem__)


def read_cifar10(folder: Path):
    """`cifar-10-batches-py/`: data_batch_1..5 (train, 50,000), test_batch (10,000), batches.meta."""
    classes = _names(folder / "batches.meta", b"label_names")
    train = [f"data_batch_{i}" for i in range(1, 6)]
    return (_cifar_split(folder, train, b"labels", classes, f"cifar10:{folder}/train"),
            _cifar_split(folder, ["test_batch"], b"labels", classes, f"cifar10:{folder}/test"))


def read_cifar100(folder: Path):
    """`cifar-100-python/`: train (50,000), test (10,000), meta; the 100 fine labels."""
    classes = _names(folder / "meta", b"fine_label_names")
    return (_cifar_split(folder, ["train"], b"fine_labels", classes, f"cifar100:{folder}/train"),
            _cifar_split(folder, ["test"], b"fine_labels", classes, f"cifar100:{folder}/test"))


def _loadmat(path: Path) -> dict:
    from scipy.io import loadmat

    if not path.is_file():
        raise MissingFileError(f"annotation file {path} does not exist")
    try:
        return loadmat(path, squeeze_me=True)
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... on a damaged file
        raise BadInputError(f"cannot read annotation file {path}: {e}") from None


def _mat_integers(path: Path, key: str) -> np.ndarray:
    """The whole numbers stored under `key` in a .mat file (an error naming the file and the key otherwise)."""
    mat = _loadmat(path)
    if key not in mat:
        raise BadInputError(f"annotation file {path} has no {key!r} (it has {sorted(k for k in mat if not k.startswith('__'))})")
    values = np.atleast_1d(np.asarray(mat[key]))
    if values.size == 0 or values.dtype.kind not in "iuf" or not np.all(np.mod(values, 1) == 0):
        raise BadInputError(f"annotation file {path}: {key!r} is not a list of whole numbers")
    return values.reshape(-1).astype(np.int64)


def read_flowers102(folder: Path):
    """`flowers-102/`: jpg/image_NNNNN.jpg, imagelabels.mat (labels 1..102), setid.mat (trnid, valid, tstid).
    Train pool: train + val (20 images per class); test: tstid."""
    labels = _mat_integers(folder / "imagelabels.mat", "labels") - 1
    sets = {key: _mat_integers(folder / "setid.mat", key) for key in ("trnid", "valid", "tstid")}
    classes = [f"flower {k}" for k in range(1, 103)]

    def split(ids, what):
        ids = np.sort(ids)
        if ids.min() < 1:
            raise BadInputError(f"{folder / 'setid.mat'}: {what} ids must be >= 1, found {ids.min()}")
        if ids.max() > len(labels):  # the ids may be right and the label list short
            raise BadInputError(f"{folder / 'imagelabels.mat'} has {len(labels)} labels, but {folder / 'setid.mat'} "
                                f"lists image {ids.max()} in {what}")
        paths = [folder / "jpg" / f"image_{i:05d}.jpg" for i in ids]
        return FileImages(f"flowers102:{folder}/{what}", folder, paths, labels[ids - 1], classes)

    return split(np.concatenate([sets["trnid"], sets["valid"]]), "trainval"), split(sets["tstid"], "test")


def _partition_file(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / "Partitions" / name):
        if candidate.is_file():
            return candidate
    raise MissingFileError(f"SUN397 partition file {name} not found in {folder} or {folder / 'Partitions'} "
                           "(unpack the official Partitions.zip there)")


def read_sun397(folder: Path, partition: int = 1):
    """`SUN397/`: ClassName.txt, <letter>/<class>/sun_*.jpg and the official partition files
    Training_01.txt / Testing_01.txt (50 + 50 images per class; in SUN397/ or SUN397/Partitions/)."""
    lines = [ln.strip() for ln in _partition_file(folder, "ClassName.txt").read_text().splitlines() if ln.strip()]
    classes = [ln.strip("/") for ln in lines]
    index = {c: i for i, c in enumerate(classes)}

    def split(name, what):
        path = _partition_file(folder, name)
        paths, targets = [], []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            rel = line.strip().strip("/")
            if not rel:
                continue
            cls = rel.rsplit("/", 1)[0]
            if cls not in index:
                raise BadInputError(f"{path}, line {lineno}: class {cls!r} is not in ClassName.txt")
            paths.append(folder / rel)
            targets.append(index[cls])
        return FileImages(f"sun397:{folder}/{what}", folder, paths, targets, classes)

    return split(f"Training_{partition:02d}.txt", "train"), split(f"Testing_{partition:02d}.txt", "test")


class _H5Rows:
    """Rows of an HDF5 dataset, opened lazily in each process (DataLoader workers must not share a handle)."""

    def __init__(self, path: Path, key: str):
        self.path, self.key, self._file, self._pid = path, key, None, None

    def __call__(self, i: int) -> np.ndarray:
        import h5py

        try:
            if self._pid != os.getpid():
                self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
            return self._file[self.key][i]
        except (OSError, KeyError, ValueError) as e:  # a corrupt chunk shows only when its rows are read
            raise BadInputError(f"cannot read image {i} of {self.path} ({self.key}): {e}") from e

    def __getstate__(self):
        return {"path": self.path, "key": self.key, "_file": None, "_pid": None}


def read_pcam(folder: Path):
    """`pcam/`: camelyonpatch_level_2_split_{train,test}_{x,y}.h5 (x: [N, 96, 96, 3] uint8, y: [N, 1, 1, 1])."""
    import h5py

    def split(what):
        x_path = folder / f"camelyonpatch_level_2_split_{what}_x.h5"
        y_path = folder / f"camelyonpatch_level_2_split_{what}_y.h5"
        try:
            with h5py.File(x_path, "r") as fx, h5py.File(y_path, "r") as fy:
                n, shape = len(fx["x"]), fx["x"].shape
                y = np.asarray(fy["y"]).reshape(-1)
        except FileNotFoundError:
            raise MissingFileError(f"PCam file {x_path} or {y_path} does not exist") from None
        except (OSError, KeyError) as e:
            raise BadInputError(f"cannot read PCam files {x_path} / {y_path}: {e}") from None
        if len(shape) != 4 or shape[-1] != 3 or len(y) != n:
            raise BadInputError(f"{x_path}: expected x [N, H, W, 3] and y [N, ...] of the same N, got {shape} "
                                f"and {len(y)} labels")
        return ArrayImages(f"pcam:{folder}/{what}", [f"{what}:{i}" for i in range(n)], y,
                           ["no tumour", "tumour"], [x_path, y_path], _H5Rows(x_path, "x"))

    return split("train"), split("test")


# --- through torchvision.datasets ------------------------------------------------------------------------

def _check_breeds(folder: Path, parts: dict) -> None:
    """Pets names each image by its breed (`<Breed>_<n>.jpg`): an annotation whose class is not the class of the
    other images of that breed is an error naming the annotation file and the image."""
    from collections import Counter

    votes: dict[str, Counter] = {}
    for items in parts.values():
        for path, label in items:
            votes.setdefault(Path(path).stem.rsplit("_", 1)[0], Counter())[label] += 1
    breed_of = {}
    for breed, counts in votes.items():
        label = counts.most_common(1)[0][0]
        if label in breed_of:
            raise BadInputError(f"{folder / 'annotations'}: breeds {breed_of[label]} and {breed} have the same "
                                f"class {label + 1}")
        breed_of[label] = breed
    majority = {breed: label for label, breed in breed_of.items()}
    for split, items in parts.items():
        for path, label in items:
            breed = Path(path).stem.rsplit("_", 1)[0]
            if label != majority[breed]:
                raise BadInputError(f"{folder / 'annotations' / (split + '.txt')}: {Path(path).stem} is class "
                                    f"{label + 1}, but its file name is of breed {breed} (class {majority[breed] + 1})")


def read_pets(folder: Path):
    """`oxford-iiit-pet/`: images/*.jpg, annotations/{trainval,test}.txt (37 breeds)."""
    from torchvision.datasets import OxfordIIITPet

    parts = {s: _torchvision(OxfordIIITPet, folder.parent, split=s) for s in ("trainval", "test")}
    _check_breeds(folder, {s: list(zip(d._images, d._labels)) for s, d in parts.items()})
    classes = parts["trainval"].classes
    return tuple(FileImages(f"pets:{folder}/{s}", folder, d._images, d._labels, classes) for s, d in parts.items())


def read_dtd(folder: Path, partition: int = 1):
    """`dtd/`: dtd/images/<class>/*.jpg, dtd/labels/{train,val,test}<partition>.txt (47 textures).
    Train pool: train + val of partition 1 (80 images per class); test: test1."""
    from torchvision.datasets import DTD

    parts = {s: _torchvision(DTD, folder.parent, split=s, partition=partition) for s in ("train", "val", "test")}
    classes = sorted(set().union(*(d.classes for d in parts.values())))

    def images(splits, what):
        paths = [p for s in splits for p in parts[s]._image_files]
        targets = [classes.index(parts[s].classes[t]) for s in splits for t in parts[s]._labels]
        return FileImages(f"dtd:{folder}/{what}{partition}", folder, paths, targets, classes)

    return images(("train", "val"), "trainval"), images(("test",), "test")


def read_food101(folder: Path):
    """`food-101/`: images/<class>/<id>.jpg, meta/{train,test}.json (101 dishes, 750 + 250 per class)."""
    from torchvision.datasets import Food101

    parts = {s: _torchvision(Food101, folder.parent, split=s) for s in ("train", "test")}
    classes = parts["train"].classes
    return tuple(FileImages(f"food101:{folder}/{s}", folder, d._image_files,
                            [classes.index(d.classes[t]) for t in d._labels], classes) for s, d in parts.items())


def read_aircraft(folder: Path):
    """`fgvc-aircraft-2013b/`: data/images/*.jpg, data/variants.txt, data/images_variant_{trainval,test}.txt."""
    from torchvision.datasets import FGVCAircraft

    parts = {s: _torchvision(FGVCAircraft, folder.parent, split=s, annotation_level="variant")
             for s in ("trainval", "test")}
    return tuple(FileImages(f"aircraft:{folder}/{s}", folder, d._image_files, d._labels, d.classes)
                 for s, d in parts.items())


def read_cars(folder: Path):
    """`stanford_cars/`: cars_{train,test}/*.jpg, devkit/cars_meta.mat, devkit/cars_train_annos.mat,
    cars_test_annos_withlabels.mat (196 models)."""
    from torchvision.datasets import StanfordCars

    parts = {s: _torchvision(StanfordCars, folder.parent, split=s) for s in ("train", "test")}
    return tuple(FileImages(f"cars:{folder}/{s}", folder, [p for p, _ in d._samples], [t for _, t in d._samples],
                            d.classes) for s, d in parts.items())


def read_caltech101(folder: Path):
    """`caltech101/`: 101_ObjectCategories/<class>/image_NNNN.jpg (BACKGROUND_Google left out). No official split:
    30 images per class train (the usual protocol), the rest test, by `by_name_digest`."""
    from torchvision.datasets import Caltech101

    d = _torchvision(Caltech101, folder.parent)
    base = folder / "101_ObjectCategories"
    paths = [base / d.categories[y] / f"image_{i:04d}.jpg" for i, y in zip(d.index, d.y)]
    every = FileImages(f"caltech101:{folder}", folder, paths, d.y, d.categories)
    train, test = by_name_digest(every.names, every.targets, n_train=30)
    return every.subset(train, f"caltech101:{folder}/train30"), every.subset(test, f"caltech101:{folder}/test")


def read_eurosat(folder: Path):
    """`eurosat/`: 2750/<class>/*.jpg (the RGB release, 10 land-cover classes). No official split: 80 % of each
    class train, 20 % test, by `by_name_digest`."""
    from torchvision.datasets import EuroSAT

    d = _torchvision(EuroSAT, folder.parent)
    every = FileImages(f"eurosat:{folder}", folder, [p for p, _ in d.samples], [t for _, t in d.samples], d.classes)
    train, test = by_name_digest(every.names, every.targets, train_fraction=0.8)
    return every.subset(train, f"eurosat:{folder}/train80"), every.subset(test, f"eurosat:{folder}/test20")


def read_gtsrb(folder: Path):
    """`gtsrb/`: GTSRB/Training/<class>/*.ppm, GTSRB/Final_Test/Images/*.ppm and GT-final_test.csv (43 signs)."""
    from torchvision.datasets import GTSRB

    parts = {s: _torchvision(GTSRB, folder.parent, split=s) for s in ("train", "test")}
    classes = sorted(e.name for e in os.scandir(folder / "GTSRB" / "Training") if e.is_dir())
    return tuple(FileImages(f"gtsrb:{folder}/{s}", folder, [p for p, _ in d._samples], [t for _, t in d._samples],
                            classes) for s, d in parts.items())
