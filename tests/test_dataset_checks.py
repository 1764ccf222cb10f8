"""Broken transfer data, on the format-faithful fakes: each mistake is one line naming the file, exit code 2, and
(for what the readers check before any work) nothing written; never a traceback, never a silently wrong score."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from lowshot.model_zoo.errors import BadInputError
from lowshot.tasks.transfer import TRANSFER_DATASETS, transfer_data

from .test_faults import lowshot
from .transfer_fakes import WRITERS

pytestmark = pytest.mark.filterwarnings("ignore::model_zoo.errors.LowshotWarning")  # fakes have few classes


def bench(tmp_path, key: str):
    """`lowshot bench` of dino-tiny on transfer-<key> under tmp_path/data, 1-shot k-NN only."""
    return lowshot(["bench", "--model", "dino-tiny", "--task", f"transfer-{key}", "--data-root",
                    str(tmp_path / "data"), "--setting", "1shot", "--classifier", "knn", "--workers", "0", "--quiet",
                    "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")])


def refused_before_any_work(tmp_path, key: str, *named: str) -> str:
    """The run stops with one line naming each of `named`, exit code 2, and writes nothing; returns the line."""
    code, _, err = bench(tmp_path, key)
    lines = [line for line in err.splitlines() if "warning:" not in line and line.strip()]
    assert code == 2 and len(lines) == 1, err
    for part in named:
        assert part in lines[0], (part, lines[0])
    written = [p for p in (tmp_path / "results").rglob("*") if p.is_file()] if (tmp_path / "results").exists() else []
    cached = [p for p in (tmp_path / "cache").rglob("*.npy")] if (tmp_path / "cache").exists() else []
    assert written == [] and cached == []
    return lines[0]


def _rewrite_cifar_batches(folder, change):
    for path in sorted(folder.glob("data_batch_*")):
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        with open(path, "wb") as f:
            pickle.dump(change(batch), f, protocol=2)


# --------------------------------------------------------------------------- a class without a training image


def test_dtd_class_with_test_images_but_no_training_image(tmp_path):
    WRITERS["dtd"](tmp_path / "data", classes=3)
    labels = tmp_path / "data" / "dtd" / "dtd" / "labels"
    for name in ("train1.txt", "val1.txt"):  # 'braided' keeps its images and its test lines
        path = labels / name
        path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if "braided" not in line))
    refused_before_any_work(tmp_path, "dtd", "no training image", "'braided'", "dtd")


def test_cifar10_class_removed_from_the_train_batches(tmp_path):
    WRITERS["cifar10"](tmp_path / "data", classes=3)
    folder = tmp_path / "data" / "cifar-10-batches-py"

    def without_class_1(batch):
        keep = [i for i, y in enumerate(batch[b"labels"]) if y != 1]
        return {**batch, b"labels": [batch[b"labels"][i] for i in keep], b"data": batch[b"data"][keep]}

    _rewrite_cifar_batches(folder, without_class_1)
    refused_before_any_work(tmp_path, "cifar10", "no training image", "'automobile'", str(folder))


# --------------------------------------------------------------------------- annotations that disagree with names


def test_pets_annotation_whose_class_is_not_the_breed_of_its_file_name(tmp_path):
    WRITERS["pets"](tmp_path / "data")
    trainval = tmp_path / "data" / "oxford-iiit-pet" / "annotations" / "trainval.txt"
    trainval.write_text(trainval.read_text().replace("Abyssinian_1 1 1 1\n", "Abyssinian_1 2 1 2\n"))
    line = refused_before_any_work(tmp_path, "pets", str(trainval), "Abyssinian_1", "breed Abyssinian")
    assert "class 2" in line


# --------------------------------------------------------------------------- malformed contents of the readers


def test_cifar_batch_that_unpickles_to_a_list(tmp_path):
    WRITERS["cifar10"](tmp_path / "data")
    batch = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    refused_before_any_work(tmp_path, "cifar10", str(batch), "list")


@pytest.mark.parametrize("labels", [["0", "1"], [0.0, 1.0], [True, False]])
def test_cifar_labels_of_the_wrong_type(tmp_path, labels):
    WRITERS["cifar10"](tmp_path / "data")
    folder = tmp_path / "data" / "cifar-10-batches-py"
    _rewrite_cifar_batches(folder, lambda b: {**b, b"labels": [labels[y] for y in b[b"labels"]]})
    refused_before_any_work(tmp_path, "cifar10", "data_batch_1", "whole numbers")


def test_cifar_meta_without_class_names(tmp_path):
    WRITERS["cifar100"](tmp_path / "data")
    meta = tmp_path / "data" / "cifar-100-python" / "meta"
    meta.write_bytes(pickle.dumps({b"coarse_label_names": [b"x"]}, protocol=2))
    refused_before_any_work(tmp_path, "cifar100", str(meta), "fine_label_names")


@pytest.mark.parametrize("file, key", [("imagelabels.mat", "labels"), ("setid.mat", "tstid"),
                                       ("setid.mat", "trnid")])
def test_flowers_mat_without_its_key(tmp_path, file, key):
    from scipy.io import loadmat, savemat

    WRITERS["flowers102"](tmp_path / "data")
    path = tmp_path / "data" / "flowers-102" / file
    content = {k: v for k, v in loadmat(path).items() if not k.startswith("__") and k != key}
    savemat(path, content or {"other": np.zeros(1)})
    refused_before_any_work(tmp_path, "flowers102", str(path), repr(key))


def test_flowers_short_imagelabels_names_imagelabels_not_setid(tmp_path):
    from scipy.io import loadmat, savemat

    WRITERS["flowers102"](tmp_path / "data")
    path = tmp_path / "data" / "flowers-102" / "imagelabels.mat"
    savemat(path, {"labels": loadmat(path, squeeze_me=True)["labels"][:-3]})
    line = refused_before_any_work(tmp_path, "flowers102", str(path))
    assert line.index("imagelabels.mat") < line.index("setid.mat")  # the short file is the one blamed


# --------------------------------------------------------------------------- found only when an image is decoded


def _no_record(tmp_path):
    return not list((tmp_path / "results").rglob("*.json")) and not list((tmp_path / "cache").rglob("*tmp*"))


def test_pcam_corrupt_chunk_is_one_line_naming_the_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    WRITERS["pcam"](tmp_path / "data")
    path = tmp_path / "data" / "pcam" / "camelyonpatch_level_2_split_test_x.h5"  # every test row is read
    with h5py.File(path, "r") as f:
        x = f["x"][:]
    with h5py.File(path, "w") as f:  # as the real files: one gzip chunk per image
        f.create_dataset("x", data=x, chunks=(1, 96, 96, 3), compression="gzip")
    with h5py.File(path, "r") as f:
        info = f["x"].id.get_chunk_info(1)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + 8)
        f.write(b"\xff" * 64)
    code, _, err = bench(tmp_path, "pcam")
    lines = [line for line in err.splitlines() if "warning:" not in line and line.strip()]
    assert code == 2 and len(lines) == 1 and str(path) in lines[0] and "Traceback" not in err, err
    assert _no_record(tmp_path)


def test_image_over_the_decompression_bomb_limit_is_one_line_naming_it(tmp_path, monkeypatch):
    from PIL import Image

    WRITERS["dtd"](tmp_path / "data")
    big = tmp_path / "data" / "dtd" / "dtd" / "images" / "banded" / "banded_0018.jpg"  # a test image: always read
    Image.new("RGB", (1000, 1000), (120, 30, 30)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200_000)  # 2x: over the resized 256 x 329 images
    code, _, err = bench(tmp_path, "dtd")
    lines = [line for line in err.splitlines() if "warning:" not in line and line.strip()]
    assert code == 2 and len(lines) == 1 and str(big) in lines[0] and "decompression" in lines[0], err
    assert _no_record(tmp_path)


def test_reader_level_checks_raise_bad_input_errors(tmp_path):
    """The same checks for a library caller of `transfer_data` (no CLI): one exception class, one line."""
    WRITERS["cifar10"](tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps("a string", protocol=2))
    with pytest.raises(BadInputError) as caught:
        transfer_data(TRANSFER_DATASETS["cifar10"], tmp_path)
    assert str(batch) in str(caught.value) and "\n" not in str(caught.value)
