"""Low-shot segmentation: sliding windows, the resize / interpolation maths, mIoU through the evaluation loop
against hand-computed confusion matrices, ADE20K / VOC 2012 layouts the tests write, and the embedded task end
to end through the CLI with a fixture checkpoint."""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import lowshot.tasks.classifiers.linear_head as linear_head
import lowshot.tasks.segmentation as seg
import lowshot.tasks.segmentation_inference as inference
from lowshot.benchmark.features import FeatureCache
from lowshot.benchmark.records import load_records
from lowshot.benchmark.runner import RunContext, run_task
from lowshot.model_zoo.registry import METHODS
from lowshot.tasks.base import FULL, Setting
from lowshot.tasks.metrics import segmentation_scores

from .conftest import fixture_model, fixture_model_args

DINO_RULES = METHODS["dino"]  # bicubic, ImageNet mean / std


@pytest.fixture(autouse=True)
def _one_thread():
    """The heads are tiny: one thread is faster, and immune to the other core being busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("h,w", [(40, 50), (64, 64), (64, 150), (200, 130), (512, 1024)])
def test_slide_windows_cover_the_image(h, w):
    crop, stride = (512, 341) if h == 512 else (64, 43)
    boxes = inference.slide_windows(h, w, crop, stride)
    count = np.zeros((h, w), int)
    for y1, y2, x1, x2 in boxes:
        assert 0 <= y1 < y2 <= h and 0 <= x1 < x2 <= w
        assert (y2 - y1, x2 - x1) == (min(crop, h), min(crop, w))  # every window is a full crop (or the image)
        count[y1:y2, x1:x2] += 1
    assert count.min() >= 1
    if max(h, w) <= crop:
        assert boxes == [(0, h, 0, w)]
    if (h, w) == (512, 1024):  # mmseg's ADE20K geometry: the last window is shifted back to end at the border
        assert boxes == [(0, 512, 0, 512), (0, 512, 341, 853), (0, 512, 512, 1024)]


def _position_image(h, w):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([ys, xs, torch.zeros_like(ys)])


def _position_logits(windows):
    """Channel 0: a function of the absolute pixel position; channel 1: the window's left edge x1."""
    ys, xs = windows[:, 0], windows[:, 1]
    return torch.stack([ys * 1000 + xs ** 2, xs[:, :1, :1].expand_as(xs)], dim=1)


def test_slide_inference_stitches_and_averages_overlaps():
    # Larger than the crop: windows x in [0,64), [43,107), [64,128); one window row.
    out = inference.slide_inference(_position_image(64, 128), _position_logits, crop=64, stride=43)
    ys, xs = _position_image(64, 128)[:2]
    torch.testing.assert_close(out[0], ys * 1000 + xs ** 2)  # the same function of position, wherever stitched
    expected = torch.zeros(128)
    expected[43:64], expected[64:107], expected[107:] = (0 + 43) / 2, (43 + 64) / 2, 64
    torch.testing.assert_close(out[1], expected.expand(64, 128))  # overlaps are averaged, not overwritten
    # Smaller than and equal to the crop: one window, the image itself.
    for h, w in [(40, 50), (64, 64)]:
        out = inference.slide_inference(_position_image(h, w), _position_logits, crop=64, stride=43)
        ys, xs = _position_image(h, w)[:2]
        torch.testing.assert_close(out[0], ys * 1000 + xs ** 2)
        assert (out[1] == 0).all()


def _mmseg_slide_inference():
    """mmseg 1.x `EncoderDecoder.slide_inference`, read from its source file (mmcv-lite cannot import it)."""
    spec = importlib.util.find_spec("mmseg")
    if spec is None:
        pytest.skip("mmsegmentation is not installed (pip install -e '.[test]')")
    path = Path(spec.submodule_search_locations[0]) / "models" / "segmentors" / "encoder_decoder.py"
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EncoderDecoder")
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "slide_inference")
    namespace = {"F": F, "torch": torch, "Tensor": torch.Tensor, "List": list}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["slide_inference"]


@pytest.mark.parametrize("h,w", [(40, 50), (64, 64), (64, 150), (200, 130)])
def test_slide_inference_equals_mmseg(h, w):
    reference = _mmseg_slide_inference()
    rng = torch.Generator().manual_seed(0)
    image = torch.rand(3, h, w, generator=rng)
    weight = torch.randn(5, 3, generator=rng)

    def window_logits(windows):  # position-dependent and content-dependent
        return torch.einsum("ck,nkhw->nchw", weight, windows) * (1 + windows.shape[-1] / 100)

    stub = SimpleNamespace(test_cfg=SimpleNamespace(stride=(43, 43), crop_size=(64, 64)), out_channels=5,
                           encode_decode=lambda crop, metas: window_logits(crop))
    expected = reference(stub, image[None], [{}])[0]
    torch.testing.assert_close(inference.slide_inference(image, window_logits, 64, 43), expected)


def test_interpolation_matches_torch_and_mmcv_rescale():
    x = torch.randn(2, 3, 4, 5)
    up_y, up_x = linear_head.interpolation_matrix(4, 64), linear_head.interpolation_matrix(5, 70)
    torch.testing.assert_close(up_y @ x @ up_x.T, F.interpolate(x, size=(64, 70), mode="bilinear",
                                                                align_corners=False), atol=1e-5, rtol=1e-5)
    down = linear_head.interpolation_matrix(37, 11)  # downsampling too
    y = torch.randn(1, 1, 37, 37)
    torch.testing.assert_close(down @ y @ down.T, F.interpolate(y, size=(11, 11), mode="bilinear",
                                                                align_corners=False), atol=1e-5, rtol=1e-5)
    logits = torch.randn(7, 23, 31)
    direct = F.interpolate(logits[None], size=(50, 41), mode="bilinear", align_corners=False)[0].argmax(0)
    old = inference.RESIZE_BAND_ELEMENTS
    try:
        inference.RESIZE_BAND_ELEMENTS = 7 * 50 * 3  # bands of 3 rows
        banded = inference.resize_argmax(logits, 50, 41)
    finally:
        inference.RESIZE_BAND_ELEMENTS = old
    assert (banded == direct).float().mean() > 0.999  # identical up to float ties
    assert (inference.resize_argmax(logits, 23, 31) == logits.argmax(0)).all()
    rescale_size = pytest.importorskip("mmcv.image.geometric").rescale_size  # mmcv's keep-ratio rule
    for h, w in [(32, 48), (375, 500), (512, 683), (400, 3000), (1000, 1000), (7, 2100)]:
        new_w, new_h = rescale_size((w, h), (2048, 512))
        assert inference.eval_size(h, w, 512, 2048) == (new_h, new_w)


# --------------------------------------------------------------------------- dataset layouts


def _write_ade(root: Path):
    """ADE layout: 6 training images, and 2 validation images whose masks the confusion test counts by hand."""
    ade = root / "ADEChallengeData2016"
    for split in ("training", "validation"):
        (ade / "images" / split).mkdir(parents=True)
        (ade / "annotations" / split).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 56), (56, 40), (64, 64), (48, 80), (64, 72), (36, 36)]):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        raw = rng.integers(0, 151, (h, w), dtype=np.uint8)
        img[raw % 2 == 1] //= 4  # odd raw labels darker: something to learn
        Image.fromarray(img).save(ade / "images" / "training" / f"ADE_train_{i:08d}.jpg", quality=95)
        Image.fromarray(raw).save(ade / "annotations" / "training" / f"ADE_train_{i:08d}.png")
    # A: 32x48, left 24 columns black, right 24 white; raw 2 (class 1) left, raw 3 (class 2) right,
    # column 23 raw 0 (ignore), a 4x4 raw-1 block (class 0) top left.
    img = np.zeros((32, 48, 3), np.uint8)
    img[:, 24:] = 255
    raw = np.full((32, 48), 2, np.uint8)
    raw[:, 24:] = 3
    raw[:, 23] = 0
    raw[:4, :4] = 1
    Image.fromarray(img).save(ade / "images" / "validation" / "ADE_val_00000001.jpg")
    Image.fromarray(raw).save(ade / "annotations" / "validation" / "ADE_val_00000001.png")
    # B: 48x32 white; raw 3 (class 2), left 8 columns raw 1 (class 0), bottom 8 rows raw 0 (ignore).
    img = np.full((48, 32, 3), 255, np.uint8)
    raw = np.full((48, 32), 3, np.uint8)
    raw[:, :8] = 1
    raw[40:] = 0
    Image.fromarray(img).save(ade / "images" / "validation" / "ADE_val_00000002.jpg")
    Image.fromarray(raw).save(ade / "annotations" / "validation" / "ADE_val_00000002.png")
    return root


class _Small(seg.LowShotSegmentation):
    """The ADE / VOC protocol at 64 px (crop 64, stride 43), so the tests stay fast."""
    short_side, crop, stride, max_long = 64, 64, 43, None


def _patch_mean(windows):
    """A 'model' with patch size 16 whose single feature is the patch mean of the first channel."""
    return F.avg_pool2d(windows[:, :1], 16).flatten(2).transpose(1, 2)


def _threshold_head(tokens, grid):
    """Class 2 where the patch is bright, class 1 where dark, never class 0 (±10 logits)."""
    bright = torch.where(tokens[..., 0] > 0, 10.0, -10.0)
    logits = torch.stack([torch.full_like(bright, -100.0), -bright, bright], dim=-1)
    return logits.reshape(tokens.shape[0], *grid, 3).permute(0, 3, 1, 2)


def _constant_head(tokens, grid, num_classes=3):
    """Always class 0."""
    logits = F.one_hot(torch.tensor(0), num_classes).float().expand(tokens.shape[0], *grid, num_classes)
    return logits.permute(0, 3, 1, 2)


def test_evaluation_loop_confusion_matches_hand_counts(tmp_path):
    data = seg.ade20k_data(_write_ade(tmp_path))
    assert data.num_classes == 150 and len(data.train) == 6 and len(data.test) == 2
    # Only classes 0..2 occur; the heads predict three classes, so count in a 3-class matrix.
    confs = inference.evaluate(_patch_mean, 16, {"thr": _threshold_head, "const": _constant_head}, data.test,
                               np.arange(2), 3, crop=64, stride=43, short_side=64, max_long=None, config=DINO_RULES)
    # A (1,536 px): class 0: 16 (predicted 1), class 1: 720, class 2: 768, ignore: 32.
    # B (1,536 px): class 0: 320 (predicted 2), class 2: 960, ignore: 256. Images are upscaled x2, slid
    # (A: 2 windows across, B: 2 windows down), and the boundary lands between patches 2 and 3 of A.
    np.testing.assert_array_equal(confs["thr"], [[0, 16, 320], [0, 720, 0], [0, 0, 1728]])
    np.testing.assert_array_equal(confs["const"], [[336, 0, 0], [720, 0, 0], [1728, 0, 0]])
    thr = segmentation_scores(confs["thr"])
    assert thr["miou"] == pytest.approx((0 + 100 * 720 / 736 + 100 * 1728 / 2048) / 3)
    assert thr["pixel_accuracy"] == pytest.approx(100 * 2448 / 2784)
    assert thr["macc"] == pytest.approx((0 + 100 + 100) / 3)
    # Accumulated over the set, not averaged per image (per image: A 16/1504 and B 320/1280 for class 0).
    assert segmentation_scores(confs["const"])["miou"] == pytest.approx(100 * 336 / 2784 / 3)


def test_evaluation_keeps_each_images_intersections_and_unions(tmp_path):
    """The paired evidence: per image and class, I and U; summed over the images they give the set's mIoU."""
    from lowshot.benchmark.evidence import score_resampled
    from lowshot.tasks.evidence import segmentation_evidence
    data = seg.ade20k_data(_write_ade(tmp_path))
    per_image = {}
    confs = inference.evaluate(_patch_mean, 16, {"thr": _threshold_head}, data.test, np.arange(2), 3, crop=64,
                               stride=43, short_side=64, max_long=None, config=DINO_RULES, per_image=per_image)
    evidence = segmentation_evidence(per_image["thr"])
    # image A: class 0 16 px predicted 1 (I 0, U 16), class 1 720 px + those 16 (I 720, U 736), class 2 768 right;
    # image B: class 0 320 px predicted 2 (I 0, U 320), class 2 960 right (U 1,280)
    np.testing.assert_array_equal(evidence.arrays["intersection"], [[0, 720, 768], [0, 0, 960]])
    np.testing.assert_array_equal(evidence.arrays["union"], [[16, 736, 768], [320, 0, 1280]])
    assert score_resampled(evidence, np.ones((1, 2)))[0] == pytest.approx(segmentation_scores(confs["thr"])["miou"])


def test_ade_protocol_through_the_task(tmp_path):
    model = fixture_model()
    data = seg.ade20k_data(_write_ade(tmp_path / "data"))
    task = _Small("ade20k-seg", data, settings=(Setting("10percent", "10 %", 10, seeds=(1,), fraction=0.1), FULL),
                  steps=8)
    ctx = RunContext(tmp_path / "results", FeatureCache(tmp_path / "features"), workers=0, progress=False)
    written = run_task(task, model, ctx)
    assert len(written) == 2
    records = {r["setting"]: r for r in (json.loads(p.read_text()) for p in written)}
    split = (tmp_path / "results" / "splits" / "ade20k-seg" / "10percent-seed1.txt").read_text().split()
    assert len(split) == 1 and records["10percent"]["num_train"] == 1  # 10 % of 6 images: at least one
    full = records["full"]
    assert full["classifier"] == "linear" and full["main_score"] == "miou" and full["num_train"] == 6
    assert set(full["metrics"]) == {"miou", "pixel_accuracy", "macc"} and full["num_test"] == 2
    assert len(full["per_class_iou"]) == 150 and full["feature"] == "patch"
    assert full["hyperparameters_chosen_by"].startswith("held-out mIoU on 1 of the 6")  # 6 >= 5 images
    assert "default" in records["10percent"]["hyperparameters_chosen_by"]
    # Training masks: label shift (raw 0 -> 255, v -> v - 1) and the image geometry, nearest-neighbour.
    masks = task.train_masks(ctx, np.arange(6))
    raw = np.array(Image.open(data.train.mask_path(3)))  # 48x80 -> 64x106 -> centre crop 64
    resized = np.array(Image.fromarray(raw).resize((106, 64), Image.NEAREST))[:, 21:85]
    expected = np.where(resized == 0, 255, resized.astype(int) - 1)
    np.testing.assert_array_equal(masks[3], expected)
    assert run_task(task, model, ctx) == []  # a second run computes nothing


def _write_voc(root: Path, aug: bool = False):
    voc = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    palette = [0, 0, 0, 128, 0, 0] + [7] * (3 * 254)
    rng = np.random.default_rng(1)
    names = [f"2007_{i:06d}" for i in range(5)]
    for i, name in enumerate(names):
        h, w = (40, 60) if i % 2 else (60, 44)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
        mask = np.zeros((h, w), np.uint8)
        mask[:, w // 2:] = 15  # person
        mask[:2], mask[:, :1] = 255, 255  # ignore border
        png = Image.fromarray(mask, "P")
        png.putpalette(palette)
        png.save(voc / "SegmentationClass" / f"{name}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(names[:3]) + "\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(names[3:]) + "\n")
    if aug:
        (voc / "SegmentationClassAug").mkdir()
        for name in names[:3]:
            png = (voc / "SegmentationClass" / f"{name}.png").read_bytes()
            (voc / "SegmentationClassAug" / f"{name}.png").write_bytes(png)
        (voc / "ImageSets/Segmentation/train_aug.txt").write_text("\n".join(names[:3]) + "\n")
    return root


def test_voc_layout_masks_and_evaluation(tmp_path):
    data = seg.voc12_data(_write_voc(tmp_path / "plain"))
    assert (data.dataset, data.num_classes, len(data.train), len(data.test)) == ("voc2012", 21, 3, 2)
    assert seg.voc12_data(_write_voc(tmp_path / "aug", aug=True)).dataset == "voc2012-trainaug"
    task = _Small("voc12-seg", data)
    ctx = RunContext(tmp_path / "results", FeatureCache(tmp_path / "features"), workers=0)
    masks = task.train_masks(ctx, np.arange(3))
    raw = np.array(Image.open(data.train.mask_path(1)))  # 40x60 -> 64x96 -> centre crop 64: columns 16..80
    np.testing.assert_array_equal(masks[1], np.array(Image.fromarray(raw).resize((96, 64), Image.NEAREST))[:, 16:80])
    assert set(np.unique(masks)) == {0, 15, 255}
    # A second call reads the cache file: the masks are never loaded again, and the array maps that file.
    (cached,) = (tmp_path / "features").rglob("*.npy")
    def no_mask(i):
        raise AssertionError("train_masks reloaded a mask instead of reading its cache file")
    data.train.load_mask = no_mask
    again = task.train_masks(ctx, np.arange(3))
    assert isinstance(again, np.memmap) and Path(again.filename) == cached
    np.testing.assert_array_equal(again, masks)
    # Evaluation at the labels' own size: a constant "background" head counts every labelled pixel once.
    confs = inference.evaluate(_patch_mean, 16, {"bg": lambda t, g: _constant_head(t, g, 21)}, data.test,
                               np.arange(2), 21, crop=64, stride=43, short_side=64, max_long=None, config=DINO_RULES)
    labelled = sum(int((data.test.load_mask(i) != 255).sum()) for i in range(2))
    assert confs["bg"].sum() == confs["bg"][:, 0].sum() == labelled


def test_train_and_eval_features_agree_on_the_embedded_geometry(tmp_path):
    """At 64 px (no resize, one window) evaluating a training image must see the features it was trained on."""
    model = fixture_model()
    task = seg.EmbeddedSegmentation("embedded-seg", seg.embedded_data(), train_pool=8, test_limit=1)
    ctx = RunContext(tmp_path / "results", FeatureCache(tmp_path / "features"), workers=0, progress=False)
    rows = np.arange(8)
    features = task.train_features(model, ctx, rows, "patch")  # the task's own transform (64 px here)
    masks = task.train_masks(ctx, rows)
    c = task.data.num_classes
    head = linear_head.train_head(features, masks, rows, c, 4, 1e-2, 40, seed=1, device="cpu")
    again = linear_head.train_head(features, masks, rows, c, 4, 1e-2, 40, seed=1, device="cpu")
    other = linear_head.train_head(features, masks, rows, c, 4, 1e-2, 40, seed=2, device="cpu")
    state, state_again = head.state_dict(), again.state_dict()
    assert all(torch.equal(state[k], state_again[k]) for k in state)  # deterministic for a seed
    assert not torch.equal(state["conv.weight"], other.state_dict()["conv.weight"])  # batches follow the seed
    on_crops = linear_head.crop_confusion(head, features, masks, rows, c, 4, "cpu")
    through_eval = inference.evaluate(lambda w: model.extract(w, ["patch"])["patch"], 16, {"h": head}, task.train, rows,
                                      c, 64, 64, 64, None, model.eval_config)["h"]
    assert on_crops.sum() == through_eval.sum() > 0
    assert np.abs(on_crops - through_eval).sum() <= 2 * 4  # identical up to a few float ties


# --------------------------------------------------------------------------- embedded, end to end


def _label_pixels(source, indices, num_classes: int) -> np.ndarray:
    """Labelled pixels per class in the evaluation masks (255 ignored), counted here from the masks."""
    counts = np.zeros(num_classes, np.int64)
    for i in indices:
        mask = np.asarray(source.load_mask(i)).ravel()
        counts += np.bincount(mask[mask != 255], minlength=num_classes)[:num_classes]
    return counts


def _check_scores_against_the_masks(record, label_pixels):
    """A record's scores recomputed from its per-class scores and the evaluation masks' class pixel counts: mIoU and
    mAcc are the means over classes present (rounded per-class values: 1e-3), the pixel accuracy is the per-class
    accuracies weighted by pixel counts, IoU never exceeds a class's accuracy, and the chance level is the expected
    mIoU of a uniform guess, computed in closed form."""
    iou, acc = (np.array([np.nan if v is None else v for v in record[k]]) for k in ("per_class_iou", "per_class_acc"))
    m = record["metrics"]
    present = label_pixels > 0
    assert np.isnan(acc[~present]).all() and not np.isnan(acc[present]).any()
    assert m["miou"] == pytest.approx(np.nanmean(iou), abs=1e-3) and m["macc"] == pytest.approx(acc[present].mean(), abs=1e-3)
    assert m["pixel_accuracy"] == pytest.approx((acc[present] * label_pixels[present]).sum() / label_pixels.sum(),
                                                abs=1e-3)
    assert (iou[present] <= acc[present] + 1e-3).all()
    n, c = label_pixels.sum(), len(label_pixels)
    chance_iou = (label_pixels / c) / (label_pixels + n / c - label_pixels / c)  # every class is predicted: U > 0
    assert record["chance"]["value"] == pytest.approx(100 * chance_iou.mean(), rel=1e-9)


def test_embedded_segmentation_end_to_end_cli(tmp_path, capsys, monkeypatch):
    from lowshot.benchmark.cli import main
    from lowshot.tasks import registry

    model_args = fixture_model_args()
    entry = registry.get_task("embedded-seg")
    test = seg.embedded_data().test
    label_pixels = _label_pixels(test, range(16), seg.embedded_data().num_classes)
    assert entry.family == "segmentation" and entry.embedded
    assert isinstance(entry.build(registry.TaskOptions()), seg.EmbeddedSegmentation)
    small = dataclasses.replace(entry, options={"train_pool": 100, "test_limit": 16, "steps": 15})
    monkeypatch.setitem(registry.TASKS, "embedded-seg", small)
    results, cache = tmp_path / "results", tmp_path / "features"
    args = ["bench", *model_args, "--task", "embedded-seg", "--results", str(results), "--cache", str(cache),
            "--workers", "0", "--quiet"]
    assert main(args) == 0
    records, problems = load_records(results)
    assert not problems and len(records) == 10
    by_key = {(r["setting"], r["seed"]): r for r in records}
    assert set(by_key) == {(s.name, seed) for s in seg.LowShotSegmentation.settings for seed in s.seeds}
    for (setting, seed), r in by_key.items():
        assert r["classifier"] == "linear" and r["family"] == "segmentation" and r["main_score"] == "miou"
        _check_scores_against_the_masks(r, label_pixels)
        assert r["num_test"] == 16 and len(r["per_class_iou"]) == 17 and r["hyperparameters"]["steps"] == 15
        if setting != "full":
            names = (results / "splits" / "embedded-seg" / f"{setting}-seed{seed}.txt").read_text().split()
            assert len(names) == r["num_train"] == {"1percent": 1, "5percent": 5, "10percent": 10}[setting]
    assert by_key[("full", 1)]["num_train"] == 100
    assert by_key[("full", 1)]["metrics"]["pixel_accuracy"] > 30  # the scenes are mostly background
    full = by_key[("full", 1)]["metrics"]["miou"]
    assert full > 2 * by_key[("full", 1)]["chance"]["value"]  # 100 labelled scenes: well above a random guess
    features = sorted(p.name for p in cache.rglob("*.npy"))
    assert len(features) == 2  # one chunk of patch features for the union, one mask array
    out = capsys.readouterr().out
    assert "10 record(s) written" in out
    mtimes = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    assert main(args) == 0  # second run: nothing computed, nothing rewritten
    out = capsys.readouterr().out
    assert "0 record(s) written" in out and "0 computed" in out
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*.json")} == mtimes
    assert sorted(p.name for p in cache.rglob("*.npy")) == features
