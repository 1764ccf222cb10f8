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
7. Records: one per (setting, seed), classifier "linear" (`linear@patch_last4` for another feature), metrics
   {"miou", "pixel_accuracy", "macc"} in percent, per-class IoU, hyper-parameters and how they were chosen.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from model_zoo.download import atomic_write_text

from .metrics import confusion_matrix, segmentation_scores
from .datasets import FirstImages
from .sampling import names_to_indices, read_split_file, sample_fraction, write_split_file

IGNORE = 255
SEEDS = (1, 2, 3)
FRACTIONS = {"1percent": 0.01, "5percent": 0.05, "10percent": 0.10}
PATCH_FEATURES = ("patch", "patch_last4")

LR_GRID = (3e-3, 1e-2, 3e-2)
DEFAULT_LR = 1e-2
WEIGHT_DECAY = 1e-4
BATCH_SIZE = 16
EPOCHS = 20
MIN_STEPS, MAX_STEPS = 200, 5_000
HOLDOUT_FRACTION, HOLDOUT_MIN_IMAGES = 0.2, 5

FEATURE_CHUNK_BYTES = 512 * 2**20  # largest float16 feature array extracted (held in memory) at once
LOSS_CHUNK_ELEMENTS = 2**25  # upsampled logits computed at once in training (~128 MiB each in float32)
RESIZE_BAND_ELEMENTS = 2**24  # logits resized to the label size at once in evaluation


def protocol_settings() -> list[tuple[str, int]]:
    return [(name, s) for name in FRACTIONS for s in SEEDS] + [("full", 1)]


@dataclass
class SegmentationData:
    dataset: str
    train: object  # names, identity, __len__, load_image(i) -> PIL RGB, load_mask(i) -> uint8 [H, W]
    test: object
    num_classes: int


# --------------------------------------------------------------------------- geometry


def eval_size(height: int, width: int, short_side: int, max_long: int | None) -> tuple[int, int]:
    """mmcv's keep-ratio rescale to scale (max_long, short_side): (new_height, new_width)."""
    factor = short_side / min(height, width)
    if max_long:
        factor = min(factor, max_long / max(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def slide_windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Window boxes (y1, y2, x1, x2) of mmseg's `slide_inference`; a side smaller than the crop is one window."""
    h_grids = max(height - crop + stride - 1, 0) // stride + 1
    w_grids = max(width - crop + stride - 1, 0) // stride + 1
    boxes = []
    for i in range(h_grids):
        for j in range(w_grids):
            y2, x2 = min(i * stride + crop, height), min(j * stride + crop, width)
            boxes.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return boxes


def slide_inference(image: torch.Tensor, window_logits, crop: int, stride: int) -> torch.Tensor:
    """Logits [C, H, W] of `image` [3, H, W] from `window_logits(windows [n, 3, h, w])`, which returns the
    windows' logits [n, C, h, w] (or yields them one [C, h, w] at a time, so that only one exists at once),
    summed where windows overlap and divided by the number of windows covering each pixel."""
    height, width = image.shape[-2:]
    boxes = slide_windows(height, width, crop, stride)
    windows = torch.stack([image[:, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])
    total = count = None
    for (y1, y2, x1, x2), window in zip(boxes, window_logits(windows)):
        if total is None:
            total = window.new_zeros((window.shape[0], height, width))
            count = window.new_zeros((height, width))
        total[:, y1:y2, x1:x2] += window
        count[y1:y2, x1:x2] += 1
    return total.div_(count)


def bilinear_taps(in_size: int, out_size: int):
    """Source indices and weights of `F.interpolate(mode="bilinear", align_corners=False)` along one axis."""
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    src = (scale * (torch.arange(out_size, dtype=torch.float32) + 0.5) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    w1 = src - i0
    return i0, i1, 1 - w1, w1


def interpolation_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """[out, in] matrix M with M @ x == bilinear resize of x along that axis (align_corners=False)."""
    i0, i1, w0, w1 = bilinear_taps(in_size, out_size)
    m = torch.zeros(out_size, in_size)
    rows = torch.arange(out_size)
    m.index_put_((rows, i0), w0, accumulate=True)
    m.index_put_((rows, i1), w1, accumulate=True)
    return m


def resize_argmax(logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """argmax over classes of `logits` [C, h, w] resized bilinearly to (height, width), in bands of rows so that
    at most RESIZE_BAND_ELEMENTS resized logits exist at once. Returns int64 [height, width]."""
    c, h, w = logits.shape
    if (h, w) == (height, width):
        return logits.argmax(0)
    y0, y1, wy0, wy1 = (t.to(logits.device) for t in bilinear_taps(h, height))
    x0, x1, wx0, wx1 = (t.to(logits.device) for t in bilinear_taps(w, width))
    out = torch.empty((height, width), dtype=torch.long, device=logits.device)
    band = max(1, RESIZE_BAND_ELEMENTS // (c * max(w, width)))
    for a in range(0, height, band):
        s = slice(a, a + band)
        rows = logits[:, y0[s]] * wy0[s, None] + logits[:, y1[s]] * wy1[s, None]  # [C, b, w]
        out[s] = (rows[:, :, x0] * wx0 + rows[:, :, x1] * wx1).argmax(0)
    return out


def _pad_to_multiple(windows: torch.Tensor, p: int) -> torch.Tensor:
    h, w = windows.shape[-2:]
    return F.pad(windows, (0, -w % p, 0, -h % p))


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


# --------------------------------------------------------------------------- head and training


class LinearHead(torch.nn.Module):
    """BatchNorm + 1x1 convolution on the patch-token grid (mmseg BNHead / iBOT linear segmentation), written
    per token: BatchNorm1d over all tokens of the batch + Linear (the same maps as BatchNorm2d + Conv2d 1x1,
    through plain matmuls, which are deterministic on GPU too)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(dim)
        self.conv = torch.nn.Linear(dim, num_classes)
        torch.nn.init.zeros_(self.conv.weight)
        torch.nn.init.zeros_(self.conv.bias)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """tokens [B, N, D] (row-major patch order, as the ViT emits them) -> logits [B, C, gh, gw]."""
        b, n, d = tokens.shape
        logits = self.conv(self.bn(tokens.reshape(b * n, d)))
        return logits.reshape(b, *grid, -1).permute(0, 3, 1, 2)


class _Features:
    """Rows of the training features, stored as memory-mapped float16 chunks (one per cache entry)."""

    def __init__(self, chunks: list[np.ndarray]):
        self.chunks = chunks
        sizes = np.array([len(c) for c in chunks])
        self.chunk_of = np.repeat(np.arange(len(chunks)), sizes)
        self.offset = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        self.nbytes = int(sum(c.nbytes for c in chunks))

    def rows(self, positions: np.ndarray) -> np.ndarray:
        return np.stack([self.chunks[self.chunk_of[p]][self.offset[p]] for p in positions])


def num_steps(n: int, batch_size: int = BATCH_SIZE, min_steps: int = MIN_STEPS, max_steps: int = MAX_STEPS) -> int:
    return int(min(max_steps, max(min_steps, math.ceil(EPOCHS * n / batch_size))))


def train_head(features: _Features, masks: np.ndarray, rows: np.ndarray, num_classes: int, grid: int, lr: float,
               steps: int, seed: int, device, batch_size: int = BATCH_SIZE) -> LinearHead:
    """Train a LinearHead on `rows` (positions in `features` / `masks` [*, crop, crop])."""
    crop = masks.shape[-1]
    dim = features.chunks[0].shape[-1]
    head = LinearHead(dim, num_classes).to(device).train()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - t / steps)
    up = interpolation_matrix(grid, crop).to(device)  # [crop, grid]: logits = up @ z @ up.T
    batch = min(batch_size, len(rows))
    rng = np.random.default_rng([seed, 2])
    order = np.concatenate([rng.permutation(len(rows)) for _ in range(math.ceil(steps * batch / len(rows)))])
    chunk = max(1, LOSS_CHUNK_ELEMENTS // (num_classes * crop * crop))
    for t in range(steps):
        picked = rows[order[t * batch:(t + 1) * batch]]
        x = torch.from_numpy(features.rows(picked)).to(device, torch.float32)
        y = torch.from_numpy(np.asarray(masks[picked])).to(device, torch.long)
        z = head(x, (grid, grid))  # [B, C, grid, grid]
        labelled = int((y != IGNORE).sum())
        if labelled:
            # Full-resolution logits only `chunk` images at a time: the loss is summed, its gradient with
            # respect to the low-resolution logits accumulated, then sent through the head in one backward.
            z_leaf = z.detach().requires_grad_()
            for s in range(0, len(picked), chunk):
                logits = up @ z_leaf[s:s + chunk] @ up.T
                (F.cross_entropy(logits, y[s:s + chunk], ignore_index=IGNORE, reduction="sum") / labelled).backward()
            opt.zero_grad(set_to_none=True)
            z.backward(z_leaf.grad)
            opt.step()
        schedule.step()
    return head.eval()


@torch.no_grad()
def crop_confusion(head: LinearHead, features: _Features, masks: np.ndarray, rows: np.ndarray, num_classes: int,
                   grid: int, device) -> np.ndarray:
    """Confusion matrix of `head` on training-geometry crops `rows` (the held-out part of a subset)."""
    crop = masks.shape[-1]
    up = interpolation_matrix(grid, crop).to(device)
    conf = np.zeros((num_classes, num_classes), np.int64)
    for s in range(0, len(rows), BATCH_SIZE):
        picked = rows[s:s + BATCH_SIZE]
        x = torch.from_numpy(features.rows(picked)).to(device, torch.float32)
        pred = (up @ head(x, (grid, grid)) @ up.T).argmax(1).cpu().numpy()
        conf += confusion_matrix(pred, np.asarray(masks[picked]), num_classes)
    return conf


# --------------------------------------------------------------------------- evaluation pass


class _EvalImages(torch.utils.data.Dataset):
    """(index, normalised image resized for evaluation [3, H, W], original-size mask)."""

    def __init__(self, source, indices, short_side, max_long, interpolation, mean, std):
        self.source, self.indices = source, np.asarray(indices)
        self.short_side, self.max_long = short_side, max_long
        self.resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[interpolation]
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, j):
        i = int(self.indices[j])
        image, mask = self.source.load_image(i), self.source.load_mask(i)
        if (image.height, image.width) != mask.shape:
            raise ValueError(f"{self.source.identity}: image {self.source.names[i]} is {image.height}x{image.width} "
                             f"but its mask is {mask.shape[0]}x{mask.shape[1]}")
        h, w = eval_size(image.height, image.width, self.short_side, self.max_long)
        if (h, w) != (image.height, image.width):
            image = image.resize((w, h), self.resample)
        x = torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)
        return i, (x - self.mean) / self.std, torch.from_numpy(mask)


@torch.no_grad()
def evaluate(extract, patch_size: int, heads: dict, source, indices, num_classes: int, crop: int, stride: int,
             short_side: int, max_long: int | None, interpolation: str = "bicubic", device="cpu",
             workers: int = 0, progress: bool = False, mean=None, std=None) -> dict:
    """One streaming pass over `source[indices]`: each window's features are computed once by
    `extract(windows [n, 3, h, w]) -> tokens [n, N, D]` and every head of `heads` {key: callable
    (tokens [n, N, D], grid (gh, gw)) -> logits [n, C, gh, gw]} is applied.
    Returns {key: confusion matrix accumulated over the whole set}."""
    from tqdm import tqdm

    from benchmark.features import IMAGENET_MEAN, IMAGENET_STD

    data = _EvalImages(source, indices, short_side, max_long, interpolation, mean or IMAGENET_MEAN, std or IMAGENET_STD)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    conf = {key: np.zeros((num_classes, num_classes), np.int64) for key in heads}
    for _, image, mask in tqdm(loader, desc="segmentation eval", disable=not progress, unit="img"):
        image, mask = image.to(device), mask.numpy()
        tokens = None

        def window_logits(windows, head):
            nonlocal tokens
            h, w = windows.shape[-2:]
            padded = _pad_to_multiple(windows, patch_size)
            grid = (padded.shape[-2] // patch_size, padded.shape[-1] // patch_size)
            if tokens is None:  # the windows are the same for every head: features once per image
                tokens = extract(padded).to(torch.float16).float()  # as the cached training features
            low = head(tokens, grid)  # [n, C, gh, gw]; upsampled one window at a time
            size = padded.shape[-2:]
            return (F.interpolate(window[None], size=size, mode="bilinear", align_corners=False)[0, :, :h, :w]
                    for window in low)

        for key, head in heads.items():
            logits = slide_inference(image, lambda windows: window_logits(windows, head), crop, stride)
            pred = resize_argmax(logits, *mask.shape)
            conf[key] += confusion_matrix(pred.cpu().numpy(), mask, num_classes)
    return conf


# --------------------------------------------------------------------------- the task


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class LowShotSegmentation:
    family = "segmentation"
    main_score = "miou"
    # Geometry (mmseg's 512x512 ADE20K / VOC protocol): training crops and evaluation windows.
    short_side = 512
    crop = 512
    stride = 341
    max_long: int | None = 2048
    min_steps, max_steps = MIN_STEPS, MAX_STEPS
    # Learning rates tried on a held-out part of each labelled subset (empty: DEFAULT_LR, nothing held out).
    lr_grid: tuple[float, ...] = LR_GRID

    def __init__(self, name: str, data: SegmentationData, settings: list[tuple[str, int]] | None = None,
                 train_pool: int | None = None, test_limit: int | None = None, steps: int | None = None):
        """`settings`, `train_pool` (first n train images), `test_limit` (first n evaluation images) and `steps`
        (a fixed step count) shrink the protocol for tests; the defaults run it whole."""
        self.name = name
        self.data = data
        self.settings = list(settings) if settings is not None else protocol_settings()
        self.train = FirstImages(data.train, train_pool) if train_pool else data.train
        self.test_indices = np.arange(min(len(data.test), test_limit) if test_limit else len(data.test))
        self.steps = steps

    # ----------------------------------------------------------------------- subsets, features, masks

    def subset(self, setting: str, seed: int, split_dir: Path) -> tuple[np.ndarray, str]:
        """Indices of the labelled subset, from the saved split file when it exists (else sampled and saved)."""
        if setting == "full":
            return np.arange(len(self.train)), "all training images"
        path = split_dir / f"{setting}-seed{seed}.txt"
        if path.exists():
            return names_to_indices(self.train.names, read_split_file(path)), str(path)
        idx = sample_fraction(len(self.train), FRACTIONS[setting], seed)
        write_split_file(path, [self.train.names[i] for i in idx])
        return idx, str(path)

    def train_features(self, model, ctx, indices: np.ndarray, transform, feature: str) -> _Features:
        """Features of `indices` through the feature cache, in chunks of at most FEATURE_CHUNK_BYTES."""
        per_image = (self.crop // model.patch_size) ** 2 * model.feature_dim(feature) * 2
        size = max(1, FEATURE_CHUNK_BYTES // per_image)
        return _Features([ctx.features(model, self.train, indices[s:s + size], transform, [feature])[feature]
                          for s in range(0, len(indices), size)])

    def train_masks(self, ctx, indices: np.ndarray, workers: int) -> np.ndarray:
        """Masks of `indices` at training geometry, uint8 [n, crop, crop], cached beside the features."""
        description = {"dataset": self.train.identity, "images": _digest([self.train.names[i] for i in indices]),
                       "num_images": len(indices), "geometry": f"Resize({self.short_side}, nearest)+CenterCrop"
                       f"({self.crop})", "kind": "segmentation masks"}
        key = _digest(description)
        path = Path(ctx.cache.root) / "masks" / key[:2] / f"{key}.npy"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(indices), self.crop, self.crop))
            start = 0
            masks = _TrainMasks(self.train, indices, self.short_side, self.crop)
            for batch in torch.utils.data.DataLoader(masks, batch_size=64, num_workers=workers):
                out[start:start + len(batch)] = batch.numpy()
                start += len(batch)
            out.flush()
            del out
            atomic_write_text(path.with_suffix(".json"), json.dumps(description, indent=1))
            os.replace(tmp, path)
        return np.load(path, mmap_mode="r")

    # ----------------------------------------------------------------------- one head per setting

    def fit(self, features, masks, rows, seed, grid, device) -> tuple[LinearHead, dict, str]:
        """Choose the learning rate on a held-out part of the subset, then train on the whole subset."""
        c = self.data.num_classes
        steps = self.steps or num_steps(len(rows), min_steps=self.min_steps, max_steps=self.max_steps)
        if not self.lr_grid:
            lr, how = DEFAULT_LR, "fixed protocol default (no learning-rate search for this task)"
        elif len(rows) < HOLDOUT_MIN_IMAGES:
            lr, how = DEFAULT_LR, f"default (subset of {len(rows)} < {HOLDOUT_MIN_IMAGES} images: none held out)"
        else:
            perm = np.random.default_rng([seed, 1]).permutation(len(rows))
            n_out = max(1, round(HOLDOUT_FRACTION * len(rows)))
            held, kept = rows[np.sort(perm[:n_out])], rows[np.sort(perm[n_out:])]
            scores = {}
            for candidate in self.lr_grid:
                head = train_head(features, masks, kept, c, grid, candidate, self.steps or num_steps(len(kept), min_steps=self.min_steps, max_steps=self.max_steps),
                                  seed, device)
                conf = crop_confusion(head, features, masks, held, c, grid, device)
                scores[candidate] = segmentation_scores(conf)["miou"]
            finite = {k: v for k, v in scores.items() if np.isfinite(v)}
            lr = max(finite, key=finite.get) if finite else DEFAULT_LR
            how = (f"held-out mIoU on {n_out} of the {len(rows)} labelled images (trained on the other "
                   f"{len(kept)}): " + ", ".join(f"{k:g}: {v:.2f}" for k, v in scores.items()))
        head = train_head(features, masks, rows, c, grid, lr, steps, seed, device)
        hyper = {"lr": lr, "weight_decay": WEIGHT_DECAY, "steps": steps, "batch_size": min(BATCH_SIZE, len(rows)),
                 "optimizer": "AdamW(0.9, 0.999)", "schedule": "poly(1.0) to 0, no warm-up",
                 "lr_grid": list(self.lr_grid),
                 "loss": "cross-entropy, ignore 255, mean over labelled pixels"}
        return head, hyper, how

    # ----------------------------------------------------------------------- run

    def run(self, model, ctx) -> list[Path]:
        from benchmark.features import TransformSpec, default_workers

        feature = ctx.feature or "patch"
        if feature not in PATCH_FEATURES:
            print(f"{self.name}: skipped, feature {feature!r} is not a patch-token feature {PATCH_FEATURES}")
            return []
        todo = [(s, seed) for s, seed in self.settings if ctx.needs(model, self.name, s, seed, "linear")]
        if not todo:
            return []
        if self.crop % model.patch_size:
            raise ValueError(f"{self.name}: crop {self.crop} is not a multiple of the patch size {model.patch_size}")
        device = model.device
        workers = default_workers() if ctx.workers is None else ctx.workers
        split_dir = Path(ctx.results) / "splits" / self.name
        subsets = {key: self.subset(*key, split_dir) for key in todo}
        union = np.unique(np.concatenate([idx for idx, _ in subsets.values()]))
        transform = TransformSpec(self.short_side, self.crop, model.spec.interpolation)
        grid = self.crop // model.patch_size

        t0 = time.time()
        features = self.train_features(model, ctx, union, transform, feature)  # every chunk is requested here
        if ctx.extract_only:  # masks are cached by the fitting run; evaluation features are never cached
            return []
        masks = self.train_masks(ctx, union, workers)
        feature_seconds, union_bytes = time.time() - t0, features.nbytes

        heads, fitted = {}, {}
        for key in todo:
            t1 = time.time()
            rows = np.searchsorted(union, subsets[key][0])
            head, hyper, how = self.fit(features, masks, rows, key[1], grid, device)
            heads[key], fitted[key] = head, (hyper, how, time.time() - t1)
            if ctx.progress:
                print(f"{self.name} {key[0]} seed {key[1]}: lr {hyper['lr']:g}, {hyper['steps']} steps, "
                      f"{time.time() - t1:.1f}s", flush=True)
        del features, masks

        t2 = time.time()
        confs = evaluate(lambda w: model.extract(w, [feature])[feature], model.patch_size, heads, self.data.test,
                         self.test_indices, self.data.num_classes, self.crop, self.stride, self.short_side,
                         self.max_long, model.spec.interpolation, device, workers, ctx.progress,
                         transform.mean, transform.std)
        eval_seconds = time.time() - t2

        written = []
        for key in todo:
            setting, seed = key
            scores = segmentation_scores(confs[key])
            hyper, how, train_seconds = fitted[key]
            train_bytes = len(subsets[key][0]) * grid * grid * model.feature_dim(feature) * 2
            written.append(ctx.write(model, self, setting, seed, "linear", {
                "miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"], "macc": scores["macc"]}, {
                "dataset": self.data.dataset, "split_source": subsets[key][1], "feature": feature,
                "num_train": int(len(subsets[key][0])), "num_train_pool": len(self.train),
                "num_test": int(len(self.test_indices)),
                "num_classes": self.data.num_classes, "transform": transform,
                "evaluation": {"mode": "slide", "short_side": self.short_side, "max_long": self.max_long,
                               "crop": self.crop, "stride": self.stride, "interpolation": model.spec.interpolation},
                "per_class_iou": [None if np.isnan(v) else round(float(v), 3) for v in scores["per_class_iou"]],
                "per_class_acc": [None if np.isnan(v) else round(float(v), 3) for v in scores["per_class_acc"]],
                "hyperparameters": hyper, "hyperparameters_chosen_by": how,
                "seconds": train_seconds + eval_seconds,
                "timing": {"train_s": round(train_seconds, 3), "features_s_shared": round(feature_seconds, 3),
                           "evaluation_s_shared": round(eval_seconds, 3), "heads_in_evaluation_pass": len(heads)},
                "memory": {"train_feature_bytes": int(train_bytes), "union_feature_bytes": union_bytes,
                           "peak_rss_mib": round(_peak_rss_mib(), 1)}}))
        return written


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
    voc = Path(resolve_voc_dir(str(root), "2012"))
    aug = (voc / "ImageSets" / "Segmentation" / "train_aug.txt").is_file() and (voc / "SegmentationClassAug").is_dir()
    train, test = VOC2012Segmentation(root, "train", use_sbd_aug=aug), VOC2012Segmentation(root, "val")
    return SegmentationData("voc2012-trainaug" if aug else "voc2012", train, test, train.num_classes)


def embedded_data(image_size: int = 64) -> SegmentationData:
    from .datasets.synthetic import SyntheticScenes
    train = SyntheticScenes("segmentation", "train", image_size)
    return SegmentationData("synthetic-scenes", train, SyntheticScenes("segmentation", "test", image_size),
                            len(train.classes) + 1)
