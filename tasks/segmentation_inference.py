"""Segmentation inference as mmsegmentation runs it: keep-ratio rescale, sliding windows with overlapping logits
averaged (`slide_inference`), logits resized to the label size, and one streaming pass that applies every
pending head to each window's features (computed once) and accumulates one confusion matrix per head.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .classifiers.linear_head import bilinear_taps
from .metrics import confusion_matrix, intersection_union

RESIZE_BAND_ELEMENTS = 2**24  # logits resized to the label size at once in evaluation


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
             short_side: int, max_long: int | None, config, device="cpu", workers: int = 0,
             bar=None, per_image: dict | None = None) -> dict:
    """One streaming pass over `source[indices]`: each window's features are computed once by
    `extract(windows [n, 3, h, w]) -> tokens [n, N, D]` and every head of `heads` {key: callable
    (tokens [n, N, D], grid (gh, gw)) -> logits [n, C, gh, gw]} is applied. Images are resized with the
    interpolation and normalised with the mean / std of `config` (the model's EvalConfig).
    `bar(total)`, when given, makes a progress bar (a context manager with `update()`) stepped once per image.
    Returns {key: confusion matrix accumulated over the whole set}; `per_image`, when given, receives {key: [each
    image's intersections and unions per class, `metrics.intersection_union`]} (the paired evidence, `tasks.evidence.segmentation_evidence`)."""

    data = _EvalImages(source, indices, short_side, max_long, config.interpolation, config.mean, config.std)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    conf = {key: np.zeros((num_classes, num_classes), np.int64) for key in heads}
    with bar(len(data)) if bar else contextlib.nullcontext() as progress:
        for _, image, mask in loader:
            _evaluate_image(image.to(device), mask.numpy(), extract, patch_size, heads, conf, num_classes, crop,
                            stride, per_image)
            if progress is not None:
                progress.update()
    return conf


def _evaluate_image(image, mask, extract, patch_size, heads, conf, num_classes, crop, stride, per_image=None) -> None:
    """Every head's predictions for one image, added to its confusion matrix in `conf` (and, with `per_image`,
    its intersections and unions appended to its list in `per_image`)."""
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
        image_conf = confusion_matrix(pred.cpu().numpy(), mask, num_classes)
        conf[key] += image_conf
        if per_image is not None:
            per_image.setdefault(key, []).append(intersection_union(image_conf).astype(np.int32))
