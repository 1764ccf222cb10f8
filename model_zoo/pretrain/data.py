"""Pre-training images (labels are never read) and the order they come in.

`cfg.data` is an image folder, read recursively with PIL, or the name of a source the caller passes in
(`train(..., source=...)`: any object with `load_image(i) -> PIL image`, `len()` and `identity`). The model zoo
knows no dataset: `lowshot pretrain --data embedded` (benchmark/cli.py) passes the embedded scenes. Images are resized (shorter side) and
center-cropped to `load_size` squares of uint8, so batches stack and multi-crop runs batched on the device.

Order: torch's DistributedSampler (shuffled with the run's seed, reshuffled per epoch with `set_epoch`,
one shard per process). `StepBatches` turns it into an endless batch sequence that can start at any
step, which is what makes a resumed run see exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler

from ..transforms import to_rgb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def to_square_uint8(image: Image.Image, size: int) -> torch.Tensor:
    """PIL image -> uint8 [3, size, size]: shorter side resized to size (bicubic), center crop."""
    image = to_rgb(image)
    w, h = image.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class SourceImages(Dataset):
    """Images of a source the caller passes in; `max_images` > 0 takes that many, evenly spaced over it (a pool
    ordered by class, like the embedded classification pool, keeps every class's share)."""

    def __init__(self, source, load_size: int, max_images: int = 0):
        self.source = source
        n = len(source)
        self.indices = np.arange(n) if not max_images or max_images >= n else \
            np.unique(np.linspace(0, n - 1, max_images).round().astype(np.int64))
        self.load_size = load_size
        self.identity = f"{source.identity}[{len(self.indices)} images]"

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        return to_square_uint8(self.source.load_image(int(self.indices[i])), self.load_size)


class ImageFolderImages(Dataset):
    """Every image file under `root`, recursively, in sorted path order."""

    def __init__(self, root: str | Path, load_size: int, max_images: int = 0):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"--data {root}: not a directory (or pass 'embedded')")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(root).parts))  # hidden
        if max_images:
            self.files = self.files[:max_images]
        if not self.files:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        self.load_size = load_size
        self.identity = f"folder:{root.resolve()}[{len(self.files)} images]"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as image:
            return to_square_uint8(image, self.load_size)


def build_dataset(cfg, source=None) -> Dataset:
    """The images of `source` when given, else the image folder `cfg.data`."""
    if source is not None:
        return SourceImages(source, cfg.load_size or cfg.img_size, cfg.max_images)
    if cfg.data == "embedded":
        raise ValueError("--data embedded: the embedded scenes are passed in by `lowshot pretrain` "
                         "(or `python -m lowshot pretrain` under torchrun); here pass an image folder")
    return ImageFolderImages(cfg.data, cfg.load_size or cfg.img_size, cfg.max_images)


class StepBatches:
    """Index batches for steps start, start + 1, ... (endless; epochs follow each other)."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        self.sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                          drop_last=True)
        self.batch_size, self.start = batch_size, start
        self.steps_per_epoch = len(self.sampler) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(dataset)} images are fewer than one batch of {batch_size} per process")

    def __iter__(self):
        epoch, offset = divmod(self.start, self.steps_per_epoch)
        while True:
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            for b in range(offset, self.steps_per_epoch):
                yield order[b * self.batch_size:(b + 1) * self.batch_size]
            epoch, offset = epoch + 1, 0
