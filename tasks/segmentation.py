"""Low-shot semantic segmentation: ADE20K, Pascal VOC 2012 (and the embedded scenes), linear head, mIoU.

The protocol (every choice, in the order the code makes it):

1. Datasets. ADE20K: `training` (20,210 images) -> train pool, `validation` (2,000) -> evaluation; 150 classes,
   raw 0 ("other") -> 255 = ignore and labels shifted by one (mmsegmentation's `reduce_zero_label`, done by the
   reader). VOC 2012: `train` (1,464) -> train pool, or the SBD-augmented `train_aug` (10,582) when
   `ImageSets/Segmentation/train_aug.txt` and `SegmentationClassAug/` are present (the usual "VOC aug" pool;
   the record's `dataset` says which); `val` (1,449) -> evaluation; 21 classes incl. background, 255 = ignore.
   Embedded: the generated scenes (10,000 train, 500 test, 64 px), 16 shapes + background = 17 classes.
2. Labelled subsets. 1 %, 5 % and 10 % of the train pool (`sampling.sample_fraction`: at least one image,
   nested within a seed), seeds 1, 2, 3, plus the full pool (seed 1). Each low-shot subset is saved as
   `<results>/splits/<task>/<setting>-seed<seed>.txt` the first time and read back afterwards.
3. Features. Frozen backbone; the final-norm patch tokens `patch` [N, D] (or, with `--feature patch_last4`,
   the last four blocks' normed patch tokens concatenated, as iBOT's linear segmentation). Training images
   are deterministic (features are cached, so no augmentation): shorter side resized to `short_side`, centre
   crop `crop` (ADE/VOC 512/512; embedded: native 64 px, no resize), the method's resize interpolation.
   Features of every image of the pending subsets (their union) are extracted once through the feature cache
   (`ctx.features`, float16 on disk, memory-mapped), in chunks of <= 512 MiB so that extraction never holds
   more than one chunk in memory, and reused across settings, steps and learning rates. Masks get the same
   geometry (torchvision Resize with nearest-neighbour + CenterCrop) and are cached beside the features as a
   memory-mapped uint8 array.
4. Head. BatchNorm + 1x1 convolution on the token grid (iBOT's / mmseg's `BNHead`, no dropout), written per
   token as BatchNorm1d + Linear (the same maps, through plain matmuls); batch statistics in training, running
   statistics in evaluation; the linear layer starts at zero, so no random initialisation is involved.
   Logits are upsampled bilinearly (align_corners=False) to the label size; cross-entropy with ignore index
   255, averaged over the labelled pixels of the batch. In training the upsampling is two interpolation
   matrices (equal to `F.interpolate`), so its backward is a matmul: deterministic on GPU too (CUDA's
   bilinear backward uses atomics); full-resolution logits exist for at most LOSS_CHUNK_ELEMENTS at a time.
5. Optimisation. AdamW (betas 0.9/0.999), weight decay 1e-4, batch 16 images (the whole subset when smaller),
   poly(1.0) decay of the learning rate to 0 (the optimiser, weight decay and schedule of DINOv2's mmseg
   linear heads, minus augmentation and warm-up). Steps: 20 epochs of the subset, clipped to [200, 5,000]
   (1 % ADE20K: 253 steps; 10 %: 2,527; full ADE20K: 5,000 = 4 epochs; VOC subsets under 160 images: 200).
   Learning rate: their 1e-3 goes with tens of thousands of iterations and under-trains these budgets: on
   the embedded scenes with oracle features (per-patch class histograms; 50 images, 200 steps) held-out mIoU
   was 7.9 / 19.8 / 43.9 / 44.2 for lr 1e-3 / 3e-3 / 1e-2 / 3e-2 (1e-3 for 1,000 steps: 32.8).
   ADE20K / VOC: chosen from {3e-3, 1e-2, 3e-2} by mIoU on a held-out 20 % of the labelled subset (at training
   geometry), then the head is retrained on the whole subset with it; subsets under 5 images, and the
   embedded task (its CPU budget), use 1e-2. Nothing is ever chosen on the evaluation set. Batches come from
   `np.random.default_rng` of the seed: deterministic for a seed.
6. Evaluation. Each evaluation image is resized (PIL, the method's interpolation, as the training crops) with
   mmseg's keep-ratio rule for scale (2048, 512): factor min(512 / shorter side, 2048 / longer side), so the
   shorter side is 512 unless the image is more than 4:1; the embedded scenes keep their 64 px. Sliding
   windows of `crop` with `stride` (512 / 341; embedded 64 / 64: one window), exactly mmseg's
   `slide_inference`: window logits upsampled to the window size, summed, divided by the per-pixel window
   count; then resized bilinearly to the label's original size and arg-maxed. Window features are rounded to
   float16 like the cached training features. Windows whose size is not a multiple of the patch size (only
   images smaller than the crop) are zero-padded right/bottom and the padding is cut off the logits.
   mIoU, mAcc and pixel accuracy come from ONE confusion matrix accumulated over the whole evaluation set
   (`metrics.segmentation_scores`, mmseg `IoUMetric` conventions), never averaged per image.
   All pending heads are trained first; then a single streaming pass over the evaluation set computes each
   window's features once and applies every head: evaluation features are never stored, and per-head memory
   is one image's logits plus one window's (the final resize is done in row bands).

Where the code is: this file (settings, subsets, cached features and masks, the run), the head and its training
in `tasks/classifiers/linear_head.py`, the geometry and the evaluation pass in `tasks/segmentation_inference.py`.
7. Records: one per (setting, seed), classifier "linear" (`linear@patch_last4` for another feature), metrics
   {"miou", "pixel_accuracy", "macc"} in percent, per-class IoU, hyper-parameters and how they were chosen.
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .base import FULL, Fitted, LowShotTask, Setting
from .classifiers.linear_head import LR_GRID, MAX_STEPS, MIN_STEPS, TokenFeatures, fit_linear_head
from .datasets import FirstImages
from .evidence import segmentation_evidence
from .sampling import sample_fraction
from .segmentation_inference import evaluate
from .metrics import segmentation_scores

FEATURE_CHUNK_BYTES = 512 * 2**20  # largest float16 feature array extracted (held in memory) at once


@dataclass
class SegmentationData:
    dataset: str
    train: object  # names, identity, __len__, load_image(i) -> PIL RGB, load_mask(i) -> uint8 [H, W]
    test: object
    num_classes: int


class _TrainMasks(torch.utils.data.Dataset):
    """Masks at training geometry: the image transform's Resize + CenterCrop, with nearest-neighbour."""

    def __init__(self, source, indices, short_side: int, crop: int):
        from torchvision.transforms import v2 as T
        self.source, self.indices = source, np.asarray(indices)
        self.geometry = T.Compose([T.Resize(short_side, interpolation=T.InterpolationMode.NEAREST),
                                   T.CenterCrop(crop)])

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, j):
        mask = Image.fromarray(self.source.load_mask(int(self.indices[j])))
        return torch.from_numpy(np.array(self.geometry(mask), np.uint8))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rounded(values) -> list:
    return [None if np.isnan(v) else round(float(v), 3) for v in values]


class LowShotSegmentation(LowShotTask):
    family = "segmentation"
    main_score = "miou"
    metric_label = "mIoU (%)"
    axis_label = "fraction of labelled training images"
    settings = (Setting("1percent", "1 %", 1, fraction=0.01), Setting("5percent", "5 %", 5, fraction=0.05),
                Setting("10percent", "10 %", 10, fraction=0.10), FULL)
    label_kind = "dense"
    features_allowed = ("patch", "patch_last4")
    # Geometry (mmseg's 512x512 ADE20K / VOC protocol): training crops and evaluation windows.
    short_side = 512
    crop = 512
    stride = 341
    max_long: int | None = 2048
    min_steps, max_steps = MIN_STEPS, MAX_STEPS
    # Learning rates tried on a held-out part of each labelled subset (empty: DEFAULT_LR, nothing held out).
    lr_grid: tuple[float, ...] = LR_GRID

    def __init__(self, name: str, data: SegmentationData, settings: tuple[Setting, ...] | None = None,
                 train_pool: int | None = None, test_limit: int | None = None, steps: int | None = None):
        """`settings`, `train_pool` (first n train images), `test_limit` (first n evaluation images) and `steps`
        (a fixed step count) shrink the protocol for tests; the defaults run it whole."""
        super().__init__(name, data, settings)
        self._train = FirstImages(data.train, train_pool) if train_pool else data.train
        self.test_indices = np.arange(min(len(data.test), test_limit) if test_limit else len(data.test))
        self.steps = steps

    @property
    def train(self):
        return self._train

    def draw_subset(self, setting: Setting, seed: int) -> np.ndarray:
        return sample_fraction(len(self.train), setting.fraction, seed)

    # ----------------------------------------------------------------------- cached features and masks

    def feature_requests(self, model, rows: np.ndarray, features: list[str]) -> list[tuple]:
        """The training rows' features, in chunks of at most FEATURE_CHUNK_BYTES (evaluation features are never
        cached: they are computed window by window in the evaluation pass)."""
        if self.crop % model.patch_size:
            raise ValueError(f"{self.name}: crop {self.crop} is not a multiple of the patch size {model.patch_size}")
        (feature,) = features
        transform = model.transform(self.short_side, self.crop)
        per_image = (self.crop // model.patch_size) ** 2 * model.feature_dim(feature) * 2
        size = max(1, FEATURE_CHUNK_BYTES // per_image)
        return [(self.train, rows[s:s + size], transform, [feature]) for s in range(0, len(rows), size)]

    def train_features(self, model, ctx, indices: np.ndarray, feature: str) -> TokenFeatures:
        """Features of `indices` through the feature cache, chunk by chunk (`feature_requests`)."""
        return TokenFeatures([ctx.features(model, *request)[feature]
                              for request in self.feature_requests(model, indices, [feature])])

    def train_masks(self, ctx, indices: np.ndarray) -> np.ndarray:
        """Masks of `indices` at training geometry, uint8 [n, crop, crop], cached (and verified) beside the features."""
        description = {"dataset": self.train.identity, "images": self.train.fingerprint(indices, masks=True),
                       "num_images": len(indices), "geometry": f"Resize({self.short_side}, nearest)+CenterCrop"
                       f"({self.crop})", "kind": "segmentation masks"}

        def fill(out):
            start = 0
            masks = _TrainMasks(self.train, indices, self.short_side, self.crop)
            for batch in torch.utils.data.DataLoader(masks, batch_size=64, num_workers=ctx.workers):
                out[start:start + len(batch)] = batch.numpy()
                start += len(batch)

        return ctx.array(description, (len(indices), self.crop, self.crop), np.uint8, fill)

    # ----------------------------------------------------------------------- the family's part of the run

    def evaluation_set(self) -> tuple:
        return self.data.test, self.test_indices

    def data_fingerprint(self, source, indices) -> dict:
        return {"dataset": source.identity, "images_and_masks": source.fingerprint(indices, masks=True)}

    def geometry(self, model) -> dict:
        return {"train": asdict(model.transform(self.short_side, self.crop)), **self._evaluation(model)}

    def _evaluation(self, model) -> dict:
        return {"evaluation": {"mode": "slide", "short_side": self.short_side, "max_long": self.max_long,
                               "crop": self.crop, "stride": self.stride,
                               "interpolation": model.eval_config.interpolation}}

    def extract(self, model, ctx, rows: np.ndarray, features: list[str]) -> dict:
        (feature,) = features
        t0 = time.time()
        transform = model.transform(self.short_side, self.crop)
        train = self.train_features(model, ctx, rows, feature)
        masks = self.train_masks(ctx, rows)
        return {"train": train, "masks": masks, "transform": transform, "grid": self.crop // model.patch_size,
                "feature_seconds": time.time() - t0, "union_bytes": train.nbytes}

    def fit(self, model, ctx, classifier, setting, seed, rows, extracted, feature) -> Fitted:
        t0 = time.time()
        name = f"{model.info.name} {self.name} {setting.name} seed {seed}"

        def bar(steps: int, what: str):  # one progress bar per head trained (learning-rate candidates, final head)
            return ctx.bar(steps, f"{name}: head {what}", "step", leave=False)

        head, hyper, how = fit_linear_head(extracted["train"], extracted["masks"], rows, self.data.num_classes,
                                           extracted["grid"], seed, model.device, self.lr_grid, self.steps,
                                           self.min_steps, self.max_steps, bar=bar)
        seconds = time.time() - t0
        ctx.log(f"{name}: lr {hyper['lr']:g}, {hyper['steps']} steps, {seconds:.1f}s")
        grid = extracted["grid"]
        memory = {"train_feature_bytes": int(len(rows) * grid * grid * model.feature_dim(feature) * 2)}
        return Fitted(head, {"hyperparameters": hyper, "hyperparameters_chosen_by": how, "memory": memory}, seconds)

    def evaluate(self, model, ctx, fitted: dict, extracted: dict, features: dict) -> dict:
        """One streaming pass over the evaluation set applies every trained head."""
        (feature,) = set(features.values())
        extracted.pop("train"), extracted.pop("masks")  # the training arrays are not needed any more
        t0 = time.time()
        per_image = {}
        confs = evaluate(lambda w: model.extract(w, [feature])[feature], model.patch_size,
                         {key: f.estimator for key, f in fitted.items()}, self.data.test, self.test_indices,
                         self.data.num_classes, self.crop, self.stride, self.short_side, self.max_long,
                         model.eval_config, model.device, ctx.workers,
                         bar=lambda n: ctx.bar(n, f"{model.info.name} {self.name}: evaluation", "img"),
                         per_image=per_image)
        eval_seconds = time.time() - t0
        extracted["label_pixels"] = next(iter(confs.values())).sum(1) if confs else None
        out = {}
        for key, f in fitted.items():
            scores = segmentation_scores(confs[key])
            out[key] = ({"miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"], "macc": scores["macc"]}, {
                "per_class_iou": _rounded(scores["per_class_iou"]), "per_class_acc": _rounded(scores["per_class_acc"]),
                "seconds": f.seconds + eval_seconds,
                "timing": {"train_s": round(f.seconds, 3), "features_s_shared": round(extracted["feature_seconds"], 3),
                           "evaluation_s_shared": round(eval_seconds, 3), "heads_in_evaluation_pass": len(fitted)},
                "memory": {**f.record["memory"], "union_feature_bytes": extracted["union_bytes"],
                           "peak_rss_mib": round(_peak_rss_mib(), 1)},
                "evidence": segmentation_evidence(per_image.pop(key))})
        return out

    def chance_level(self, extracted: dict) -> dict | None:
        """The mIoU of a uniform random prediction over the classes: the expected confusion matrix of the
        evaluation set's labelled pixels, scored as the real ones are."""
        pixels = extracted.get("label_pixels")
        if pixels is None:
            return None
        n = self.data.num_classes
        expected = np.outer(pixels, np.full(n, 1.0 / n))
        return {"value": segmentation_scores(expected)["miou"],
                "rule": f"uniform random prediction over {n} classes on the evaluation set's labelled pixels"}

    def record_fields(self, model, extracted: dict) -> dict:
        return {"dataset": self.data.dataset, "num_train_pool": len(self.train), "num_test": int(len(self.test_indices)),
                "num_classes": self.data.num_classes, "transform": extracted["transform"], **self._evaluation(model)}


class EmbeddedSegmentation(LowShotSegmentation):
    """The embedded scenes at their native 64 px: no resize, one 64x64 window per image; the fixed default
    learning rate (the held-out search would multiply the CPU time of this offline task by ~3.4); 100 to 500
    steps, so the offline benchmark stays within minutes on two CPU cores."""
    min_steps, max_steps = 100, 500
    short_side = 64
    crop = 64
    stride = 64
    max_long = None
    lr_grid = ()


# --------------------------------------------------------------------------- datasets


def ade20k_data(root) -> SegmentationData:
    from .datasets.ade20k import ADE20KSegmentation
    train, test = ADE20KSegmentation(root, "training"), ADE20KSegmentation(root, "validation")
    return SegmentationData("ade20k", train, test, train.num_classes)


def voc12_data(root) -> SegmentationData:
    """VOC 2012 train (or the SBD-augmented train_aug when its list and masks are present) -> val."""
    from .datasets.voc import VOC2012Segmentation, resolve_voc_dir
    voc = Path(resolve_voc_dir(root, "2012"))
    aug = (voc / "ImageSets" / "Segmentation" / "train_aug.txt").is_file() and (voc / "SegmentationClassAug").is_dir()
    train, test = VOC2012Segmentation(root, "train", use_sbd_aug=aug), VOC2012Segmentation(root, "val")
    return SegmentationData("voc2012-trainaug" if aug else "voc2012", train, test, train.num_classes)


def embedded_data(image_size: int = 64) -> SegmentationData:
    from .datasets.synthetic import SyntheticScenes
    train = SyntheticScenes("segmentation", "train", image_size)
    return SegmentationData("synthetic-scenes", train, SyntheticScenes("segmentation", "test", image_size),
                            len(train.classes) + 1)
