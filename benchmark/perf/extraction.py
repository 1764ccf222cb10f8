"""Extraction throughput: our full pipeline vs the bare timm forward of the same model, measured in one run.

    python -m lowshot.benchmark.perf.extraction [--arch vit_small --patch 16 --img 224 --n 256 --batch-size 64
                                         --device cpu|cuda --bf16 --workers N --small]

Prints images/s and the ratios
  pipeline (in-memory images -> transform -> model -> cache write) / bare forward   (goal >= 0.9)
  pipeline (JPEG files decoded by worker processes -> ...) / bare forward          (decode-bound case)
Weights do not change speed, so the model is a randomly initialised ViT of the chosen architecture in our
FeatureExtractor (the same code path as a loaded checkpoint).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.models.vision_transformer import VisionTransformer

from lowshot.benchmark.features import FeatureCache
from lowshot.model_zoo.files import digest
from lowshot.model_zoo.transforms import TransformSpec
from lowshot.model_zoo.backbones import ViTBackbone
from lowshot.model_zoo.extractor import FeatureExtractor, ModelInfo
from lowshot.model_zoo.formats import Architecture
from lowshot.model_zoo.registry import ARCHS, METHODS

from .timing import sync, throughput


def random_extractor(arch: str, patch: int, img: int, device: str, bf16: bool) -> FeatureExtractor:
    dim, depth, heads = ARCHS[arch]
    vit = VisionTransformer(img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, num_classes=0)
    a = Architecture(dim, depth, patch, img // patch, 4.0, True)
    info = ModelInfo(f"random-{arch}{patch}", "dino", "<random>", f"random-{arch}-{patch}-{img}", "none", "teacher", a, heads)
    return FeatureExtractor(ViTBackbone(vit, "dino"), METHODS["dino"], info, bf16=bf16).to(device)


class InMemoryImages:
    """Decoded PIL images held in memory (the decode-free case)."""

    def __init__(self, images: list[Image.Image], identity: str):
        self.images, self.identity = images, identity
        self.names = [f"img_{i}.png" for i in range(len(images))]

    def __len__(self):
        return len(self.images)

    def load_image(self, i):
        return self.images[i]

    def fingerprint(self, indices, masks: bool = False) -> str:  # fresh images of a fresh cache each time
        return digest([self.names[int(i)] for i in indices])


class JpegFolder(InMemoryImages):
    """JPEG files img_0.jpg ... decoded with PIL; with `distinct`, image i is file i % distinct (a long run over
    a few files: each read is decoded again)."""

    def __init__(self, folder: Path, n: int, distinct: int | None = None):
        self.paths = [folder / f"img_{i % (distinct or n)}.jpg" for i in range(n)]
        self.identity, self.names = f"jpeg:{folder}", [f"img_{i}.jpg" for i in range(n)]

    def __len__(self):
        return len(self.paths)

    def load_image(self, i):
        with Image.open(self.paths[i]) as im:
            return im.convert("RGB")


def bare_forward(model: FeatureExtractor, batch: torch.Tensor) -> float:
    """Images/s of timm's own forward_features on a batch already on the device."""
    def step():
        with torch.no_grad(), model.precision(batch.device):  # as the pipeline: bf16 autocast, or IEEE fp32 on CUDA
            model.backbone.vit.forward_features(batch)
    return throughput(step, len(batch), batch.device)


def pipeline(model, source, n: int, transform: TransformSpec, batch_size: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp)
        t0 = time.perf_counter()
        cache.get(model, source, np.arange(n), transform, [model.lowshot_feature], batch_size, workers, progress=False)
        sync(model.device)
        return n / (time.perf_counter() - t0)


def synthetic_images(n: int, img: int, seed: int = 0, side: int | None = None) -> list[Image.Image]:
    """Random 4:3 RGB images. Default: pure noise whose shorter side is the protocol's resize (img * 256 / 224), so
    the transform only crops. With `side` (ImageNet's photos: 375 x 500 on average) photo-like images instead: smooth
    colour fields plus noise, which compress and decode like photographs (a 500 x 375 one is ~90 KiB as a quality-90
    JPEG; ImageNet's validation images average ~130 KiB) and which the transform resizes."""
    rng = np.random.default_rng(seed)
    if side is None:
        side = img * 256 // 224
        return [Image.fromarray(rng.integers(0, 255, (side, side + side // 3, 3), dtype=np.uint8)) for _ in range(n)]
    out = []
    for _ in range(n):
        field = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((side + side // 3, side),
                                                                                         Image.BICUBIC)
        noisy = np.asarray(field, np.int16) + rng.integers(-32, 33, (side, side + side // 3, 3), dtype=np.int16)
        out.append(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    return out


def eval_spec(img: int) -> TransformSpec:
    return TransformSpec(img * 256 // 224, img, "bicubic")


def write_jpegs(images: list[Image.Image], folder: Path) -> JpegFolder:
    for i, im in enumerate(images):
        im.save(folder / f"img_{i}.jpg", quality=90)
    return JpegFolder(folder, len(images))


def measure(model: FeatureExtractor, images: list[Image.Image], batch_size: int, workers: int | None,
            jpeg: JpegFolder, memory_workers: int | None = 0) -> dict:
    """Images/s of the bare forward on one batch already on the device, of the pipeline from `images` in memory
    (transformed by `memory_workers` processes, default none) and of the pipeline from the JPEG files `jpeg`
    (decoded and transformed by `workers` processes)."""
    transform = eval_spec(model.info.arch.img_size)
    batch = torch.stack([transform.build()(im) for im in images[:batch_size]]).to(model.device)
    n = len(images)
    return {"bare": bare_forward(model, batch),
            "memory": pipeline(model, InMemoryImages(images, "memory"), n, transform, batch_size, memory_workers),
            "jpeg": pipeline(model, jpeg, n, transform, batch_size, workers)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="vit_small", choices=sorted(ARCHS))
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--n", type=int, default=256, help="images per pipeline run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--workers", type=int, default=None, help="decode workers for the JPEG case (default: machine)")
    p.add_argument("--small", action="store_true", help="CI size: ViT-S/16 at 64 px, 16 images")
    a = p.parse_args(argv)
    if a.small:
        a.img, a.n, a.batch_size = 64, 16, 8
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but CUDA is not available")
    torch.manual_seed(0)
    model = random_extractor(a.arch, a.patch, a.img, a.device, a.bf16)
    images = synthetic_images(a.n, a.img)
    with tempfile.TemporaryDirectory() as tmp:
        out = measure(model, images, a.batch_size, a.workers, write_jpegs(images, Path(tmp)))
    bare, memory, jpeg = out["bare"], out["memory"], out["jpeg"]
    tag = f"{a.arch}/{a.patch} @{a.img}px, batch {a.batch_size}, {a.device}{' bf16' if a.bf16 else ''}"
    print(f"extraction throughput, {tag}")
    print(f"  bare timm forward       {bare:9.1f} img/s")
    print(f"  pipeline, in memory     {memory:9.1f} img/s   ratio {memory / bare:.3f}")
    print(f"  pipeline, JPEG + workers{jpeg:9.1f} img/s   ratio {jpeg / bare:.3f}")
    return out


if __name__ == "__main__":
    main()
