"""Tests for the VOC / COCO / ADE20K readers on tiny fixtures written to tmp_path."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from lowshot.tasks.datasets.ade20k import ADE20K_CLASSES, ADE20KSegmentation
from lowshot.tasks.datasets.coco import COCOMultiLabel
from lowshot.tasks.datasets.voc import VOC_CLASSES, VOC2007MultiLabel, VOC2012Segmentation

# --------------------------------------------------------------------------- helpers


def _jpeg(path, size=(8, 6), color=(200, 30, 40)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG")


def _palette_png(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="P")
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[1:21] = np.arange(1, 21)[:, None] * 12  # arbitrary colours
    pal[255] = 224
    im.putpalette(pal.ravel().tolist())
    im.save(path)


def _gray_png(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="L").save(path)


def _voc_xml(objects):
    objs = []
    for name, difficult in objects:
        diff = "" if difficult is None else f"<difficult>{difficult}</difficult>"
        objs.append(
            f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>{diff}"
            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>4</ymax></bndbox></object>"
        )
    return f"<annotation><folder>VOC2007</folder><size><width>8</width><height>6</height></size>{''.join(objs)}</annotation>"


VOC07_OBJECTS = {
    "000001": [("dog", 0), ("person", 0), ("person", 1)],  # several classes
    "000002": [("cat", 1), ("cat", 0)],  # difficult + non-difficult -> positive, not ignored
    "000003": [("bottle", 1), ("bottle", 1), ("chair", 0)],  # bottle only difficult -> ignored
    "000004": [("car", None)],  # no <difficult> tag -> not difficult
}


def _make_voc07(base):
    voc = base / "VOCdevkit" / "VOC2007"
    for name, objs in VOC07_OBJECTS.items():
        _jpeg(str(voc / "JPEGImages" / f"{name}.jpg"))
        (voc / "Annotations").mkdir(parents=True, exist_ok=True)
        (voc / "Annotations" / f"{name}.xml").write_text(_voc_xml(objs))
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n000002\n000003\n")
    (voc / "ImageSets" / "Main" / "test.txt").write_text("000004\n")
    return voc


# --------------------------------------------------------------------------- VOC2007


def test_voc07_targets_and_ignore(tmp_path):
    voc = _make_voc07(tmp_path)
    ds = VOC2007MultiLabel(tmp_path, "trainval")
    assert ds.classes == list(VOC_CLASSES) and len(ds.classes) == 20
    assert ds.names == ["000001", "000002", "000003"] and len(ds) == 3
    assert ds.targets.dtype == np.float32 and ds.targets.shape == (3, 20)
    assert ds.ignore.dtype == np.bool_ and ds.ignore.shape == (3, 20)
    c = {name: i for i, name in enumerate(VOC_CLASSES)}
    expected = np.zeros((3, 20), dtype=np.float32)
    expected[0, [c["dog"], c["person"]]] = 1
    expected[1, c["cat"]] = 1
    expected[2, c["chair"]] = 1
    np.testing.assert_array_equal(ds.targets, expected)
    expected_ignore = np.zeros((3, 20), dtype=bool)
    expected_ignore[2, c["bottle"]] = True
    np.testing.assert_array_equal(ds.ignore, expected_ignore)
    im = ds.load_image(0)
    assert im.mode == "RGB" and im.size == (8, 6)

    test = VOC2007MultiLabel(tmp_path, "test")
    assert test.names == ["000004"] and test.targets[0, c["car"]] == 1 and not test.ignore.any()
    assert test.identity != ds.identity and ds.identity.startswith("voc2007/trainval@")
    # the three accepted roots give the same dataset identity
    for root in (tmp_path / "VOCdevkit", voc):
        assert VOC2007MultiLabel(root, "trainval").identity == ds.identity


def test_voc07_bad_root_and_split(tmp_path):
    _make_voc07(tmp_path)
    with pytest.raises(FileNotFoundError, match="could not find VOC2007"):
        VOC2007MultiLabel(tmp_path / "VOCdevkit" / "VOC2007" / "JPEGImages")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VOC2007MultiLabel(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        VOC2007MultiLabel(tmp_path, "train")
    # another year's folder is never taken for VOC2007
    voc12 = tmp_path / "VOCdevkit" / "VOC2012"
    (voc12 / "JPEGImages").mkdir(parents=True)
    (voc12 / "ImageSets").mkdir()
    with pytest.raises(FileNotFoundError, match="could not find VOC2007"):
        VOC2007MultiLabel(voc12)


def test_voc07_missing_and_malformed_annotation(tmp_path):
    voc = _make_voc07(tmp_path)
    ann = voc / "Annotations" / "000002.xml"
    ann.write_text("<annotation><object><name>cat</name></annotation>")
    with pytest.raises(ValueError, match="000002.xml"):
        VOC2007MultiLabel(tmp_path)
    ann.write_text(_voc_xml([("kitten", 0)]))
    with pytest.raises(ValueError, match="000002.xml.*unknown class 'kitten'"):
        VOC2007MultiLabel(tmp_path)
    ann.write_text(_voc_xml([("cat", "yes")]))
    with pytest.raises(ValueError, match="000002.xml.*difficult"):
        VOC2007MultiLabel(tmp_path)
    ann.unlink()
    with pytest.raises(FileNotFoundError, match="000002.xml"):
        VOC2007MultiLabel(tmp_path)
    (voc / "JPEGImages" / "000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000003.jpg"):
        VOC2007MultiLabel(tmp_path)


# --------------------------------------------------------------------------- VOC2012 segmentation


def _make_voc12(base):
    voc = base / "VOCdevkit" / "VOC2012"
    seg_sets = voc / "ImageSets" / "Segmentation"
    seg_sets.mkdir(parents=True)
    masks = {
        "2007_000032": np.array([[0, 0, 5, 5], [0, 255, 5, 20], [255, 255, 20, 20]]),
        "2007_000039": np.array([[1, 1, 1, 1], [0, 0, 0, 0], [255, 0, 0, 0]]),
        "2007_000063": np.array([[15, 15, 0, 0], [15, 255, 0, 0], [0, 0, 0, 0]]),
    }
    for name, m in masks.items():
        _jpeg(str(voc / "JPEGImages" / f"{name}.jpg"), size=(4, 3))
        _palette_png(str(voc / "SegmentationClass" / f"{name}.png"), m)
    (seg_sets / "train.txt").write_text("2007_000032\n2007_000039\n")
    (seg_sets / "val.txt").write_text("2007_000063\n")
    return voc, masks


def test_voc12_segmentation_masks(tmp_path):
    voc, masks = _make_voc12(tmp_path)
    ds = VOC2012Segmentation(tmp_path, "train")
    assert ds.num_classes == 21 and ds.classes[0] == "background" and len(ds.classes) == 21
    assert ds.names == ["2007_000032", "2007_000039"]
    m = ds.load_mask(0)
    assert m.dtype == np.uint8 and m.shape == (3, 4)
    np.testing.assert_array_equal(m, masks["2007_000032"])  # palette indices, not colours
    assert ds.load_image(0).mode == "RGB"
    assert ds.identity.startswith("voc2012/train@")
    val = VOC2012Segmentation(voc, "val")
    np.testing.assert_array_equal(val.load_mask(0), masks["2007_000063"])


def test_voc12_bad_masks(tmp_path):
    voc, _ = _make_voc12(tmp_path)
    ds = VOC2012Segmentation(tmp_path, "train")
    Image.new("RGB", (4, 3), (128, 0, 0)).save(voc / "SegmentationClass" / "2007_000032.png")
    with pytest.raises(ValueError, match="2007_000032.png.*mode 'RGB'"):
        ds.load_mask(0)
    _palette_png(str(voc / "SegmentationClass" / "2007_000039.png"), np.full((3, 4), 30))
    with pytest.raises(ValueError, match="2007_000039.png.*30"):
        ds.load_mask(1)
    (voc / "SegmentationClass" / "2007_000039.png").unlink()
    with pytest.raises(FileNotFoundError, match="2007_000039.png"):
        VOC2012Segmentation(tmp_path, "train")


def test_voc12_sbd_aug(tmp_path):
    voc, _ = _make_voc12(tmp_path)
    with pytest.raises(FileNotFoundError, match="train_aug.txt"):
        VOC2012Segmentation(tmp_path, "train", use_sbd_aug=True)
    with pytest.raises(ValueError, match="only applies"):
        VOC2012Segmentation(tmp_path, "val", use_sbd_aug=True)
    aug = np.array([[3, 3, 0, 0], [3, 255, 0, 0], [0, 0, 0, 0]])
    for name in ("2007_000032", "2007_000039", "2008_000001"):
        _gray_png(str(voc / "SegmentationClassAug" / f"{name}.png"), aug)
    _jpeg(str(voc / "JPEGImages" / "2008_000001.jpg"), size=(4, 3))
    # DeepLab-style pairs are accepted as well as plain names
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(
        "2007_000032\n/JPEGImages/2007_000039.jpg /SegmentationClassAug/2007_000039.png\n2008_000001\n"
    )
    ds = VOC2012Segmentation(tmp_path, "train", use_sbd_aug=True)
    assert ds.names == ["2007_000032", "2007_000039", "2008_000001"]
    np.testing.assert_array_equal(ds.load_mask(2), aug)
    assert ds.identity.startswith("voc2012/train_aug@")
    # a validation image in the augmented train list is refused
    _gray_png(str(voc / "SegmentationClassAug" / "2007_000063.png"), aug)
    with open(voc / "ImageSets" / "Segmentation" / "train_aug.txt", "a") as f:
        f.write("2007_000063\n")
    with pytest.raises(ValueError, match="val.txt"):
        VOC2012Segmentation(tmp_path, "train", use_sbd_aug=True)


# --------------------------------------------------------------------------- COCO

# the 80 real COCO category ids (1..90 without 12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def _coco_json(images=None, annotations=None, categories=None):
    if categories is None:
        categories = [{"id": i, "name": f"cat{i}", "supercategory": "x"} for i in reversed(COCO_IDS)]
    if images is None:
        images = [
            {"id": 42, "file_name": "COCO_train2014_000000000042.jpg", "width": 8, "height": 6},
            {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "width": 8, "height": 6},
            {"id": 77, "file_name": "COCO_train2014_000000000077.jpg", "width": 8, "height": 6},
        ]
    if annotations is None:
        annotations = [
            {"id": 1, "image_id": 9, "category_id": 1, "iscrowd": 0},
            {"id": 2, "image_id": 9, "category_id": 90, "iscrowd": 0},
            {"id": 3, "image_id": 9, "category_id": 1, "iscrowd": 0},
            {"id": 4, "image_id": 42, "category_id": 13, "iscrowd": 1},  # crowd -> positive
            # image 77 has no annotation -> all-zero target
        ]
    return {"images": images, "annotations": annotations, "categories": categories}


def _make_coco(base, data=None, split="train2014"):
    data = _coco_json() if data is None else data
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    (base / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    for img in data["images"]:
        _jpeg(str(base / split / img["file_name"]))
    return base / "annotations" / f"instances_{split}.json"


def test_coco_targets(tmp_path):
    _make_coco(tmp_path)
    ds = COCOMultiLabel(tmp_path, "train2014")
    assert len(ds.classes) == 80 and ds.category_ids == COCO_IDS
    assert ds.classes[0] == "cat1" and ds.classes[-1] == "cat90" and ds.classes[11] == "cat13"
    assert ds.names == [
        "COCO_train2014_000000000009",
        "COCO_train2014_000000000042",
        "COCO_train2014_000000000077",
    ]
    np.testing.assert_array_equal(ds.image_ids, [9, 42, 77])
    expected = np.zeros((3, 80), dtype=np.float32)
    expected[0, [0, 79]] = 1
    expected[1, 11] = 1  # category 13 (after the gap at 12) via an iscrowd annotation
    np.testing.assert_array_equal(ds.targets, expected)
    assert ds.targets.dtype == np.float32 and ds.ignore.dtype == np.bool_ and not ds.ignore.any()
    assert ds.load_image(1).mode == "RGB"
    assert ds.identity == f"coco/train2014@{os.path.realpath(tmp_path)}"


def test_coco_errors(tmp_path):
    ann = _make_coco(tmp_path)
    ann.write_text('{"images": [')
    with pytest.raises(ValueError, match="instances_train2014.json"):
        COCOMultiLabel(tmp_path)
    data = _coco_json()
    del data["annotations"]
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="instances_train2014.json.*'annotations'"):
        COCOMultiLabel(tmp_path)
    data = _coco_json()
    del data["images"][1]["file_name"]
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"images\[1\] has no 'file_name'"):
        COCOMultiLabel(tmp_path)
    data = _coco_json()
    data["annotations"].append({"id": 9, "image_id": 9, "category_id": 12})
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown category id 12"):
        COCOMultiLabel(tmp_path)
    ann.write_text(json.dumps(_coco_json(categories=[{"id": 1, "name": "person"}])))
    with pytest.raises(ValueError, match="1 categories, expected 80"):
        COCOMultiLabel(tmp_path)
    ann.write_text(json.dumps(_coco_json()))
    (tmp_path / "train2014" / "COCO_train2014_000000000077.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="COCO_train2014_000000000077.jpg"):
        COCOMultiLabel(tmp_path)
    with pytest.raises(FileNotFoundError, match="instances_val2014.json"):
        COCOMultiLabel(tmp_path, "val2014")


# --------------------------------------------------------------------------- ADE20K


def _make_ade(base, split="training"):
    ade = base / "ADEChallengeData2016"
    raws = {
        "ADE_train_00000002": np.array([[0, 1, 2], [150, 150, 0]]),
        "ADE_train_00000001": np.array([[7, 7, 7], [0, 0, 149]]),
    }
    for name, raw in raws.items():
        _jpeg(str(ade / "images" / split / f"{name}.jpg"), size=(3, 2))
        _gray_png(str(ade / "annotations" / split / f"{name}.png"), raw)
    return ade, raws


def test_ade20k_labels(tmp_path):
    ade, _ = _make_ade(tmp_path)
    ds = ADE20KSegmentation(tmp_path, "training")
    assert ds.num_classes == 150 and ds.classes == list(ADE20K_CLASSES) and ds.classes[7] == "bed"
    assert ds.names == ["ADE_train_00000001", "ADE_train_00000002"]
    np.testing.assert_array_equal(ds.load_mask(1), [[255, 0, 1], [149, 149, 255]])
    np.testing.assert_array_equal(ds.load_mask(0), [[6, 6, 6], [255, 255, 148]])
    assert ds.load_mask(0).dtype == np.uint8
    assert ds.load_image(0).mode == "RGB"
    assert ADE20KSegmentation(ade, "training").identity == ds.identity
    with pytest.raises(FileNotFoundError, match="images/validation"):
        ADE20KSegmentation(tmp_path, "validation")


def test_ade20k_errors(tmp_path):
    ade, _ = _make_ade(tmp_path)
    _gray_png(str(ade / "annotations" / "training" / "ADE_train_00000001.png"), np.full((2, 3), 151))
    with pytest.raises(ValueError, match="ADE_train_00000001.png.*151"):
        ADE20KSegmentation(tmp_path).load_mask(0)
    (ade / "annotations" / "training" / "ADE_train_00000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="ADE_train_00000002.jpg"):
        ADE20KSegmentation(tmp_path)
    with pytest.raises(FileNotFoundError, match="could not find ADEChallengeData2016"):
        ADE20KSegmentation(tmp_path / "ADEChallengeData2016" / "images")


def test_index_of(tmp_path):
    _make_voc07(tmp_path)
    ds = VOC2007MultiLabel(tmp_path)
    assert ds.index_of("000003") == 2
    with pytest.raises(KeyError, match="voc2007/trainval@"):
        ds.index_of("000004")
