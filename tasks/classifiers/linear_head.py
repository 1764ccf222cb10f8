"""The linear segmentation head (classifier "linear"): BatchNorm + 1x1 convolution on frozen patch tokens,
trained with AdamW on cached training-geometry features, its learning rate chosen on a held-out part of the
labelled subset. The protocol around it is in `tasks/segmentation.py`.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..datasets import IGNORE_INDEX
from ..metrics import confusion_matrix, segmentation_scores

LR_GRID = (3e-3, 1e-2, 3e-2)
DEFAULT_LR = 1e-2
WEIGHT_DECAY = 1e-4
BATCH_SIZE = 16
EPOCHS = 20
MIN_STEPS, MAX_STEPS = 200, 5_000
HOLDOUT_FRACTION, HOLDOUT_MIN_IMAGES = 0.2, 5
LOSS_CHUNK_ELEMENTS = 2**25  # upsampled logits computed at once in training (~128 MiB each in float32)
# What every head's training shares (part of each record's identity; the per-task budget is added to it).
HEAD_PROTOCOL = {"optimizer": "AdamW(0.9, 0.999)", "weight_decay": WEIGHT_DECAY, "batch_size": BATCH_SIZE,
                 "epochs": EPOCHS, "schedule": "poly(1.0)", "holdout": [HOLDOUT_FRACTION, HOLDOUT_MIN_IMAGES],
                 "default_lr": DEFAULT_LR}


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


class TokenFeatures:
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


def train_head(features: TokenFeatures, masks: np.ndarray, rows: np.ndarray, num_classes: int, grid: int, lr: float,
               steps: int, seed: int, device, batch_size: int = BATCH_SIZE, progress=None) -> LinearHead:
    """Train a LinearHead on `rows` (positions in `features` / `masks` [*, crop, crop]); `progress.update()` after
    every step when given."""
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
        labelled = int((y != IGNORE_INDEX).sum())
        if labelled:
            # Full-resolution logits only `chunk` images at a time: the loss is summed, its gradient with
            # respect to the low-resolution logits accumulated, then sent through the head in one backward.
            z_leaf = z.detach().requires_grad_()
            for s in range(0, len(picked), chunk):
                logits = up @ z_leaf[s:s + chunk] @ up.T
                (F.cross_entropy(logits, y[s:s + chunk], ignore_index=IGNORE_INDEX, reduction="sum") / labelled).backward()
            opt.zero_grad(set_to_none=True)
            z.backward(z_leaf.grad)
            opt.step()
        schedule.step()
        if progress is not None:
            progress.update()
    return head.eval()


@torch.no_grad()
def crop_confusion(head: LinearHead, features: TokenFeatures, masks: np.ndarray, rows: np.ndarray, num_classes: int,
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


def fit_linear_head(features: TokenFeatures, masks: np.ndarray, rows: np.ndarray, num_classes: int, grid: int,
                    seed: int, device, lr_grid: tuple[float, ...] = LR_GRID, steps: int | None = None,
                    min_steps: int = MIN_STEPS, max_steps: int = MAX_STEPS, bar=None) -> tuple[LinearHead, dict, str]:
    """(head, hyper-parameters, how the learning rate was chosen): the learning rate with the best mIoU on a
    held-out part of the labelled subset `rows` (trained on the rest), then the head retrained on all of `rows`.
    An empty `lr_grid`, or a subset too small to hold images out, uses DEFAULT_LR. `steps` fixes the step count
    (tests); by default 20 epochs of the subset within [min_steps, max_steps]. `bar(steps, what)`, when given, makes
    the progress bar (a context manager with `update()`) of each head trained."""
    def budget(n):
        return steps or num_steps(n, min_steps=min_steps, max_steps=max_steps)

    def train(kept, lr, n_steps, what):
        with bar(n_steps, what) if bar else contextlib.nullcontext() as progress:
            return train_head(features, masks, kept, num_classes, grid, lr, n_steps, seed, device, progress=progress)

    if not lr_grid:
        lr, how = DEFAULT_LR, "fixed protocol default (no learning-rate search for this task)"
    elif len(rows) < HOLDOUT_MIN_IMAGES:
        lr, how = DEFAULT_LR, f"default (subset of {len(rows)} < {HOLDOUT_MIN_IMAGES} images: none held out)"
    else:
        perm = np.random.default_rng([seed, 1]).permutation(len(rows))
        n_out = max(1, round(HOLDOUT_FRACTION * len(rows)))
        held, kept = rows[np.sort(perm[:n_out])], rows[np.sort(perm[n_out:])]
        scores = {}
        for candidate in lr_grid:
            head = train(kept, candidate, budget(len(kept)), f"lr {candidate:g} (held-out search)")
            conf = crop_confusion(head, features, masks, held, num_classes, grid, device)
            scores[candidate] = segmentation_scores(conf)["miou"]
        finite = {k: v for k, v in scores.items() if np.isfinite(v)}
        lr = max(finite, key=finite.get) if finite else DEFAULT_LR
        how = (f"held-out mIoU on {n_out} of the {len(rows)} labelled images (trained on the other "
               f"{len(kept)}): " + ", ".join(f"{k:g}: {v:.2f}" for k, v in scores.items()))
    total = budget(len(rows))
    head = train(rows, lr, total, f"lr {lr:g}")
    hyper = {"lr": lr, "weight_decay": WEIGHT_DECAY, "steps": total, "batch_size": min(BATCH_SIZE, len(rows)),
             "optimizer": "AdamW(0.9, 0.999)", "schedule": "poly(1.0) to 0, no warm-up", "lr_grid": list(lr_grid),
             "loss": f"cross-entropy, ignore {IGNORE_INDEX}, mean over labelled pixels"}
    return head, hyper, how
