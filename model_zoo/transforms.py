"""The evaluation transform, built from a model's evaluation config and the protocol's sizes.

A task states only its protocol's geometry (ImageNet: shorter side 256, centre crop 224; segmentation 512 / 512;
the embedded scenes 64 / 64); the interpolation and the normalisation come from the model's `EvalConfig`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
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


def eval_transform(config: EvalConfig, resize: int, crop: int) -> TransformSpec:
    """The transform of `config`'s method at the protocol's sizes."""
    return TransformSpec(resize, crop, config.interpolation, tuple(config.mean), tuple(config.std))
