"""Low-shot multi-label classification end to end on VOC- and COCO-layout datasets the test writes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lowshot.benchmark.cli import main
from lowshot.benchmark.records import load_records
from lowshot.tasks.datasets.voc import VOC_CLASSES
from lowshot.tasks.multilabel import LowShotMultiLabel, voc07_data

from .conftest import fixture_model_args

COLOURS = np.random.default_rng(5).integers(0, 255, (80, 3))


def _image(path, classes, rng):
    """Stripes coloured by the classes present, plus noise: learnable, not trivial."""
    img = np.zeros((36, 44, 3)) + 128
    for j, c in enumerate(classes):
        img[:, j * 44 // len(classes):(j + 1) * 44 // len(classes)] = COLOURS[c]
    img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _scene_classes(rng, num_classes, i):
    return sorted({i % num_classes} | set(rng.choice(num_classes, rng.integers(0, 2), replace=False).tolist()))


def write_voc07(root, n_trainval=46, n_test=16):
    voc = root / "VOCdevkit" / "VOC2007"
    rng = np.random.default_rng(0)
    splits = {"trainval": [], "test": []}
    for i in range(n_trainval + n_test):
        name = f"{i:06d}"
        classes = _scene_classes(rng, 20, i)
        _image(voc / "JPEGImages" / f"{name}.jpg", classes, rng)
        # image 3 also holds a difficult bottle: neither positive nor negative for 'bottle'
        objs = [(VOC_CLASSES[c], 0) for c in classes] + ([("bottle", 1)] if i == 3 else [])
        xml = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
                      f"<xmax>5</xmax><ymax>5</ymax></bndbox></object>" for n, d in objs)
        (voc / "Annotations").mkdir(parents=True, exist_ok=True)
        (voc / "Annotations" / f"{name}.xml").write_text(f"<annotation>{xml}</annotation>")
        splits["trainval" if i < n_trainval else "test"].append(name)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    for split, names in splits.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def write_coco(root, n_train=60, n_val=20):
    rng = np.random.default_rng(1)
    cats = [{"id": 1 + c + c // 10, "name": f"cat{c}"} for c in range(80)]  # non-contiguous ids, as COCO's
    for split, n, offset in (("train2014", n_train, 0), ("val2014", n_val, 1000)):
        images, anns = [], []
        for i in range(n):
            classes = _scene_classes(rng, 80, i)
            fname = f"COCO_{split}_{offset + i:012d}.jpg"
            _image(root / split / fname, classes, rng)
            images.append({"id": offset + i, "file_name": fname, "width": 44, "height": 36})
            anns += [{"id": len(anns) + 1 + offset, "image_id": offset + i, "category_id": cats[c]["id"],
                      "iscrowd": 0, "bbox": [0, 0, 4, 4], "area": 16} for c in classes]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


@pytest.mark.slow
def test_voc07_end_to_end_splits_saved_and_reused(tmp_path):
    data = write_voc07(tmp_path / "voc")
    results = tmp_path / "results"
    args = ["bench", *fixture_model_args(), "--task", "voc07-multilabel", "--data-root", str(data),
            "--results", str(results), "--cache", str(tmp_path / "features"), "--workers", "0", "--quiet"]
    assert main(args) == 0
    records, problems = load_records(results)
    records = [r for r in records if r["family"] != "label-free"]  # RankMe and α-ReQ of the test features
    assert not problems and len(records) == sum(len(s.seeds) for s in LowShotMultiLabel.settings) == 16
    by = {(r["setting"], r["seed"]): r for r in records}
    full = by[("full", 1)]
    assert full["num_train"] == 46 and full["num_test"] == 16 and full["main_score"] == "map"
    assert 0 < full["metrics"]["map"] <= 100 and 0 < full["metrics"]["map_voc07"] <= 100
    assert "cross-validation" in full["hyperparameters_chosen_by"]
    # every class reaches k in the saved k-shot split files; files are read back on a rerun
    ds = voc07_data(data).train
    for k in (1, 2, 5):
        for seed in (1, 2, 3):
            names = (results / "splits" / "voc07-multilabel" / f"{k}shot-seed{seed}.txt").read_text().split()
            idx = [ds.index_of(n) for n in names]
            positives = (ds.targets[idx] * ~ds.ignore[idx]).sum(0)
            assert positives.min() >= min(k, (ds.targets * ~ds.ignore).sum(0).min())
    one = by[("1shot", 1)]["num_train"]
    assert one < by[("5shot", 1)]["num_train"] <= 46
    # a rerun of a setting reads its saved split file and gives the same numbers
    split_file = results / "splits" / "voc07-multilabel" / "2shot-seed2.txt"
    kept = split_file.read_text()
    assert main(args + ["--overwrite", "--setting", "2shot"]) == 0
    again = [r for r in load_records(results)[0] if r["family"] != "label-free"]
    assert split_file.read_text() == kept
    assert {(r["setting"], r["seed"]): r["metrics"]["map"] for r in again} == \
        {k: r["metrics"]["map"] for k, r in by.items()}


@pytest.mark.slow
def test_coco_end_to_end(tmp_path, capsys):
    write_coco(tmp_path / "coco")
    results = tmp_path / "results"
    assert main(["bench", *fixture_model_args(), "--task", "coco-multilabel", "--data-root", str(tmp_path),
                 "--results", str(results), "--cache", str(tmp_path / "f"), "--workers", "0", "--quiet",
                 "--setting", "5shot", "full"]) == 0
    assert "fewer than k" in capsys.readouterr().err  # tiny pool: some classes have < 5 positives (named warning)
    records, _ = load_records(results)
    assert len(records) == 4 and all(r["num_classes"] == 80 for r in records)
    assert {r["setting"] for r in records} == {"5shot", "full"}
    assert all(np.isfinite(r["metrics"]["map"]) for r in records)


def test_difficult_labels_are_masked_in_training(tmp_path):
    data = write_voc07(tmp_path / "voc")
    task = LowShotMultiLabel("voc07-multilabel", voc07_data(data))
    i = task.data.train.index_of("000003")
    bottle = VOC_CLASSES.index("bottle")
    assert task.data.train.ignore[i, bottle] and task.data.train.targets[i, bottle] == 0
