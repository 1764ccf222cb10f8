"""Format-faithful fakes of the transfer datasets: a few small images per class in each dataset's real layout and
annotation files (pickled CIFAR batches, .mat files, HDF5, text lists, CSV), written under a test's tmp_path.

Each writer puts its dataset at `<root>/<expected folder>` with `classes` classes, `train` images per class in the
train pool and `test` per class in the test split (datasets without an official split get `train + test` images
per class, split by the reader's rule), and returns the number of (train, test) images it wrote.
"""
from __future__ import annotations

import json
import pickle

import numpy as np
from PIL import Image

TRAIN, TEST = 17, 2  # 16 shots need 16 images of every class


def _pixels(c: int, i: int, size=(28, 36)) -> np.ndarray:
    rng = np.random.default_rng([c, i])
    base = np.zeros((*size, 3)) + [50 + 90 * (c % 3), 200 - 60 * (c % 4), 40 + 70 * (c // 3 % 3)]
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _image(path, c: int, i: int, fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(c, i)).save(path, format=fmt)


def _per_class(classes, train, test):
    """[(class, index within class, is_train)]"""
    return [(c, i, i < train) for c in range(classes) for i in range(train + test)]


def write_cifar10(root, classes=2, train=TRAIN, test=TEST):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": 10000, b"num_vis": 3072}, f, protocol=2)
    items = _per_class(classes, train, test)
    tr = [(c, i) for c, i, t in items if t]
    te = [(c, i) for c, i, t in items if not t]

    def batch(part, label):
        data = np.stack([_pixels(c, i, (32, 32)).transpose(2, 0, 1).reshape(-1) for c, i in part])
        return {b"batch_label": label, b"labels": [c for c, _ in part], b"data": data,
                b"filenames": [f"img_{c}_{i}.png".encode() for c, i in part]}

    for b in range(5):
        with open(folder / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump(batch(tr[b::5], b"training batch"), f, protocol=2)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(te, b"testing batch"), f, protocol=2)
    return len(tr), len(te)


def write_cifar100(root, classes=2, train=TRAIN, test=TEST):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"fine{k}".encode() for k in range(100)],
                     b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)]}, f, protocol=2)
    items = _per_class(classes, train, test)
    for split, keep in (("train", True), ("test", False)):
        part = [(c, i) for c, i, t in items if t == keep]
        data = np.stack([_pixels(c, i, (32, 32)).transpose(2, 0, 1).reshape(-1) for c, i in part])
        with open(folder / split, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": [c for c, _ in part], b"coarse_labels": [0] * len(part),
                         b"filenames": [b"x.png"] * len(part)}, f, protocol=2)
    return classes * train, classes * test


def write_flowers102(root, classes=2, train=TRAIN, test=TEST):
    from scipy.io import savemat

    folder = root / "flowers-102"
    labels, sets = [], {"trnid": [], "valid": [], "tstid": []}
    for n, (c, i, is_train) in enumerate(_per_class(classes, train, test), 1):
        _image(folder / "jpg" / f"image_{n:05d}.jpg", c, i)
        labels.append(c + 1)
        sets["trnid" if is_train and i % 2 == 0 else "valid" if is_train else "tstid"].append(n)
    savemat(folder / "imagelabels.mat", {"labels": np.array([labels], np.uint8)})
    savemat(folder / "setid.mat", {k: np.array([v], np.uint16) for k, v in sets.items()})
    return classes * train, classes * test


def write_pets(root, classes=2, train=TRAIN, test=TEST):
    folder = root / "oxford-iiit-pet"
    breeds = ["Abyssinian", "american_bulldog", "Bengal", "boxer"][:classes]
    lines = {"trainval": [], "test": []}
    for c, i, is_train in _per_class(classes, train, test):
        name = f"{breeds[c]}_{i + 1}"
        _image(folder / "images" / f"{name}.jpg", c, i)
        species = 1 if breeds[c][0].isupper() else 2  # the real files: cats capitalised
        lines["trainval" if is_train else "test"].append(f"{name} {c + 1} {species} {c + 1}")
    (folder / "annotations").mkdir()
    for split, ls in lines.items():
        (folder / "annotations" / f"{split}.txt").write_text("\n".join(ls) + "\n")
    return classes * train, classes * test


def write_dtd(root, classes=2, train=TRAIN, test=TEST):
    folder = root / "dtd" / "dtd"
    textures = ["banded", "blotchy", "braided", "bubbly"][:classes]
    lines = {"train1": [], "val1": [], "test1": []}
    for c, i, is_train in _per_class(classes, train, test):
        rel = f"{textures[c]}/{textures[c]}_{i + 1:04d}.jpg"
        _image(folder / "images" / rel, c, i)
        lines[("train1" if i % 2 == 0 else "val1") if is_train else "test1"].append(rel)
    (folder / "labels").mkdir()
    for split, ls in lines.items():
        (folder / "labels" / f"{split}.txt").write_text("\n".join(ls) + "\n")
    return classes * train, classes * test


def write_food101(root, classes=2, train=TRAIN, test=TEST):
    folder = root / "food-101"
    dishes = ["apple_pie", "baby_back_ribs", "baklava"][:classes]
    meta = {"train": {d: [] for d in dishes}, "test": {d: [] for d in dishes}}
    for c, i, is_train in _per_class(classes, train, test):
        rel = f"{dishes[c]}/{1000 + i}"
        _image(folder / "images" / f"{rel}.jpg", c, i)
        meta["train" if is_train else "test"][dishes[c]].append(rel)
    (folder / "meta").mkdir()
    for split, m in meta.items():
        (folder / "meta" / f"{split}.json").write_text(json.dumps(m))
    (folder / "meta" / "classes.txt").write_text("\n".join(dishes) + "\n")
    return classes * train, classes * test


def write_aircraft(root, classes=2, train=TRAIN, test=TEST):
    folder = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "727-200", "A300B4", "F-16A/B"][:classes]
    lines = {"trainval": [], "test": []}
    for n, (c, i, is_train) in enumerate(_per_class(classes, train, test)):
        image_id = f"{1025794 + n:07d}"
        _image(folder / "images" / f"{image_id}.jpg", c, i)
        lines["trainval" if is_train else "test"].append(f"{image_id} {variants[c]}")
    (folder / "variants.txt").write_text("\n".join(variants) + "\n")
    for split, ls in lines.items():
        (folder / f"images_variant_{split}.txt").write_text("\n".join(ls) + "\n")
    return classes * train, classes * test


def write_cars(root, classes=2, train=TRAIN, test=TEST):
    from scipy.io import savemat

    folder = root / "stanford_cars"
    names = np.array([f"Make Model {2000 + k}" for k in range(196)], dtype=object)
    (folder / "devkit").mkdir(parents=True)
    savemat(folder / "devkit" / "cars_meta.mat", {"class_names": names.reshape(1, -1)})
    fields = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    annos = {"train": [], "test": []}
    for c, i, is_train in _per_class(classes, train, test):
        split = "train" if is_train else "test"
        fname = f"{len(annos[split]) + 1:05d}.jpg"
        _image(folder / f"cars_{split}" / fname, c, i)
        annos[split].append((1, 1, 30, 20, c + 1, fname))
    for split, path in (("train", folder / "devkit" / "cars_train_annos.mat"),
                        ("test", folder / "cars_test_annos_withlabels.mat")):
        rows = np.empty((1, len(annos[split])), dtype=fields)
        for j, row in enumerate(annos[split]):
            rows[0, j] = row
        savemat(path, {"annotations": rows})
    return classes * train, classes * test


def write_caltech101(root, classes=2, train=30, test=TEST):
    folder = root / "caltech101" / "101_ObjectCategories"
    categories = ["accordion", "airplanes", "anchor"][:classes]
    for c, i, _ in _per_class(classes, train, test):
        _image(folder / categories[c] / f"image_{i + 1:04d}.jpg", c, i)
    _image(folder / "BACKGROUND_Google" / "image_0001.jpg", 9, 0)  # not a class
    return classes * train, classes * test


def write_sun397(root, classes=2, train=TRAIN, test=TEST):
    folder = root / "SUN397"
    scenes = ["a/abbey", "b/bakery/shop", "c/campus"][:classes]  # some SUN classes have a sub-folder
    lines = {"Training_01": [], "Testing_01": []}
    for c, i, is_train in _per_class(classes, train, test):
        rel = f"/{scenes[c]}/sun_{c:02d}{i:04d}abcdefgh.jpg"
        _image(folder / rel.lstrip("/"), c, i)
        lines["Training_01" if is_train else "Testing_01"].append(rel)
    (folder / "ClassName.txt").write_text("".join(f"/{s}\n" for s in scenes))
    for name, ls in lines.items():
        (folder / f"{name}.txt").write_text("\n".join(ls) + "\n")
    return classes * train, classes * test


def write_eurosat(root, classes=2, train=16, test=4):
    folder = root / "eurosat" / "2750"
    names = ["AnnualCrop", "Forest", "HerbaceousVegetation"][:classes]
    for c, i, _ in _per_class(classes, train, test):
        _image(folder / names[c] / f"{names[c]}_{i + 1}.jpg", c, i)
    return classes * train, classes * test


def write_gtsrb(root, classes=2, train=TRAIN, test=TEST):
    folder = root / "gtsrb"
    tests = []
    for c, i, is_train in _per_class(classes, train, test):
        if is_train:
            cls = folder / "GTSRB" / "Training" / f"{c:05d}"
            _image(cls / f"00000_{i:05d}.ppm", c, i, "PPM")
        else:
            name = f"{len(tests):05d}.ppm"
            _image(folder / "GTSRB" / "Final_Test" / "Images" / name, c, i, "PPM")
            tests.append(f"{name};36;28;1;1;35;27;{c}")
    for c in range(classes):
        (folder / "GTSRB" / "Training" / f"{c:05d}" / f"GT-{c:05d}.csv").write_text(
            "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n")
    (folder / "GT-final_test.csv").write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
                                              + "\n".join(tests) + "\n")
    return classes * train, classes * test


def write_pcam(root, classes=2, train=TRAIN, test=TEST):
    import h5py

    folder = root / "pcam"
    folder.mkdir(parents=True)
    items = _per_class(2, train, test)
    for split, keep in (("train", True), ("test", False)):
        part = [(c, i) for c, i, t in items if t == keep]
        x = np.stack([_pixels(c, i, (96, 96)) for c, i in part])
        y = np.array([c for c, _ in part], np.uint8).reshape(-1, 1, 1, 1)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            f.create_dataset("x", data=x)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f.create_dataset("y", data=y)
    return 2 * train, 2 * test


WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100, "flowers102": write_flowers102, "pets": write_pets,
           "dtd": write_dtd, "food101": write_food101, "aircraft": write_aircraft, "cars": write_cars,
           "caltech101": write_caltech101, "sun397": write_sun397, "eurosat": write_eurosat, "gtsrb": write_gtsrb,
           "pcam": write_pcam}


def write_all(root) -> dict[str, tuple[int, int]]:
    return {key: write(root) for key, write in WRITERS.items()}
