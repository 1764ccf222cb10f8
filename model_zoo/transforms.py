"""Images as the models see them: any PIL image as 8-bit RGB (`to_rgb`), and the evaluation transform, built
from a model's evaluation config and the protocol's sizes.

A task states only its protocol's geometry (ImageNet: shorter side 256, centre crop 224; segmentation 512 / 512;
the embedded scenes 64 / 64); the interpolation and the normalisation come from the model's `EvalConfig`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from .registry import IMAGENET_MEAN, IMAGENET_STD, EvalConfig

PIL_INTERPOLATION = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}


@dataclass(frozen=True)
class TransformSpec:
    """Evaluation transform: resize the shorter side, center crop, normalise."""
    resize: int
    crop: int
    interpolation: str = "bicubic"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def build(self):
        # Resize and crop act on the PIL image (PIL's resampling, as the official torchvision v1 pipelines).
        return T.Compose([T.Resize(self.resize, interpolation=PIL_INTERPOLATION[self.interpolation]),
                          T.CenterCrop(self.crop), T.ToImage(), T.ToDtype(torch.float32, scale=True),
                          T.Normalize(self.mean, self.std)])

    def __call__(self, image) -> torch.Tensor:
        """The transformed image ([3, crop, crop], normalised): `model.transform(256, 224)(pil_image)`, as the
        benchmark feeds `model.extract` (add a batch dimension: `.unsqueeze(0)`)."""
        built = self.__dict__.get("_built")
        if built is None:  # built once per spec (a frozen dataclass: kept beside its fields, not one of them)
            built = self.__dict__["_built"] = self.build()
        return built(image)


def eval_transform(config: EvalConfig, resize: int, crop: int) -> TransformSpec:
    """The transform of `config`'s method at the protocol's sizes."""
    return TransformSpec(resize, crop, config.interpolation, tuple(config.mean), tuple(config.std))


def to_rgb(im):
    """A PIL image of any mode as 8-bit RGB. 16- and 32-bit integer grey levels are scaled from the 16-bit range
    (PIL's own convert clips them at 255: a white image); palette images with transparency go through RGBA; an
    alpha channel is dropped, as torchvision's loader does."""
    if im.mode.startswith("I"):  # "I;16", "I;16B", "I" (32-bit): PNG / TIFF grey levels up to 65535
        grey = np.clip(np.asarray(im, np.float64) / 257.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "F":  # float grey levels, taken as 0..1
        grey = np.clip(np.asarray(im, np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")
