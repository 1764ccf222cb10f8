"""Multi-crop augmentation (DINO / MSN), batched on tensors so it runs on the training device.

Per view and image: a random resized crop (torchvision's RandomResizedCrop sampling: area fraction in
`scale`, aspect ratio log-uniform in [3/4, 4/3], resampled bilinearly with `roi_align`), a horizontal flip
(p=0.5), colour jitter (p=0.8; brightness, contrast, saturation, in that fixed order), a random permutation
of the RGB channels (p=`channel_shuffle_p`: a coarse, cheap hue jitter), grayscale and, on the second global
view, solarisation. Gaussian blur is left out (at 64 px it erases the shapes of the embedded dataset), and so
is torchvision's small hue jitter (an HSV round trip). All randomness is drawn
from the generator passed, on the CPU, so a step's views depend only on (images, generator state).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.ops import roi_align

from .config import PretrainConfig


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def crop_boxes(batch: int, height: int, width: int, scale: tuple, g: torch.Generator, tries: int = 10) -> torch.Tensor:
    """[batch, 4] boxes (x1, y1, x2, y2) in pixels: first valid of `tries` candidates, else the whole image."""
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * _rand(g, batch, tries))
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * _rand(g, batch, tries)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(target * ratio).round()
    h = torch.sqrt(target / ratio).round()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(valid.any(1), valid.float().argmax(1), torch.full((batch,), -1))
    pick = first.clamp_min(0).unsqueeze(1)
    w, h = w.gather(1, pick).squeeze(1), h.gather(1, pick).squeeze(1)
    w = torch.where(first >= 0, w, torch.tensor(float(width), dtype=w.dtype))
    h = torch.where(first >= 0, h, torch.tensor(float(height), dtype=h.dtype))
    offsets = _rand(g, batch, 2)
    x1 = torch.floor(offsets[:, 0] * (width - w + 1))
    y1 = torch.floor(offsets[:, 1] * (height - h + 1))
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


_PERMUTATIONS = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_* blend: factor * a + (1 - factor) * b, clamped to [0, 1]."""
    return (factor * a + (1 - factor) * b).clamp(0, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


@dataclass
class MultiCrop:
    n_global: int
    n_local: int
    global_size: int
    local_size: int
    global_scale: tuple
    local_scale: tuple
    jitter: float = 0.4
    grayscale_p: float = 0.2
    solarize_p: float = 0.0
    channel_shuffle_p: float = 0.0
    mean: tuple = IMAGENET_DEFAULT_MEAN
    std: tuple = IMAGENET_DEFAULT_STD

    @classmethod
    def from_config(cls, cfg: PretrainConfig) -> "MultiCrop":
        return cls(cfg.n_global, cfg.n_local, cfg.img_size, cfg.local_size, cfg.global_scale, cfg.local_scale,
                   cfg.jitter, cfg.grayscale_p, cfg.solarize_p, cfg.channel_shuffle_p)

    def view(self, images: torch.Tensor, size: int, scale: tuple, g: torch.Generator, solarize_p: float = 0.0,
             normalise: bool = True) -> torch.Tensor:
        """One augmented view [B, 3, size, size] of float images in [0, 1] [B, 3, H, W]."""
        b, _, h, w = images.shape
        dev = images.device
        boxes = crop_boxes(b, h, w, scale, g)
        rois = torch.cat([torch.arange(b, dtype=boxes.dtype).unsqueeze(1), boxes], dim=1).to(dev, images.dtype)
        x = roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=0, aligned=True)
        draws = _rand(g, b, 9).to(dev, images.dtype).view(b, 9, 1, 1, 1)
        x = torch.where(draws[:, 0] < 0.5, x.flip(-1), x)
        jitter = draws[:, 1] < 0.8
        factors = 1 + self.jitter * (2 * draws[:, 2:5] - 1)  # brightness, contrast, saturation in [1-j, 1+j]
        y = _blend(x, torch.zeros_like(x), factors[:, 0])
        y = _blend(y, _gray(y).mean(dim=(1, 2, 3), keepdim=True), factors[:, 1])
        y = _blend(y, _gray(y), factors[:, 2])
        x = torch.where(jitter, y, x)
        if self.channel_shuffle_p:  # one of the 6 channel orders per image, identity when not drawn
            order = torch.tensor(_PERMUTATIONS, device=dev)[(draws[:, 7].view(b) * 6).long().clamp(max=5)]
            order = torch.where(draws[:, 8].view(b, 1) < self.channel_shuffle_p, order, torch.arange(3, device=dev))
            x = x.gather(1, order.view(b, 3, 1, 1).expand_as(x))
        x = torch.where(draws[:, 5] < self.grayscale_p, _gray(x).expand_as(x), x)
        x = torch.where(draws[:, 6] < solarize_p, torch.where(x >= 0.5, 1 - x, x), x)
        if normalise:
            mean = torch.tensor(self.mean, device=dev, dtype=x.dtype).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=dev, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """uint8 images [B, 3, H, W] -> (global views, local views), normalised with the ImageNet statistics."""
        x = images.float() / 255
        globals_ = [self.view(x, self.global_size, self.global_scale, g, self.solarize_p if i == 1 else 0.0)
                    for i in range(self.n_global)]
        locals_ = [self.view(x, self.local_size, self.local_scale, g) for _ in range(self.n_local)]
        return globals_, locals_
