"""The one feature interface: `FeatureExtractor.extract(images, names)` over a token backbone, and `ModelInfo`, the
provenance of a loaded model. Loading (`model_zoo.loading.load_model`) sits above this module and the sources.

Feature names (the contract tasks and tests rely on; P prefix tokens = CLS, then registers / storage tokens):
  cls               final-norm CLS of the last block
  patch             final-norm patch tokens [B, N, D] (registers / storage tokens excluded)
  registers         final-norm register / storage tokens [B, R, D] (models that have them)
  cls_last4         normed CLS of the last min(4, depth) blocks, oldest first, concatenated
  patch_last4       normed patch tokens of the last min(4, depth) blocks, concatenated on channels [B, N, k*D]
  cls_prenorm       last-block CLS without the final norm (MSN's low-shot feature)
  cls_avgpool       [cls, mean of the last block's normed patch tokens] (DINOv2 / DINOv3 create_linear_input n=1)
  cls_last4_avgpool [CLS of the last min(4, depth) blocks, mean normed patch tokens] (create_linear_input n=4)
  linear_avgpool    the method's own linear-eval pooled feature (DINO interleaved, iBOT / DINOv2 / DINOv3
                    concatenated = cls_avgpool, MAE a fresh fc_norm over the mean of pre-norm patch tokens)
  pooled            the model's own pooled output (timm global-pool models, Hugging Face pooler)
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .backbones import Backbone
from .formats import Architecture
from .registry import FEATURES, EvalConfig
from .transforms import TransformSpec, eval_transform

# How far bf16 features may lie from fp32 ones: the largest per-image relative L2 deviation |f_bf16 - f_fp32| / |f_fp32|
# of any feature (measured on CPU: <= 0.011 on random-init ViT-S/16 and ViT-B/16 at 64 and 224 px, 0.0016 on the
# trained tiny models). Tests and `benchmark.perf.gpu_check` hold bf16 extraction to it, on CPU and on CUDA.
BF16_TOLERANCE = 0.03

@dataclass(frozen=True)
class ModelInfo:
    """Provenance of a loaded model, for cache keys and result records."""
    name: str
    method: str
    checkpoint: str
    sha256: str
    layout: str
    weights: str
    arch: Architecture
    num_heads: int
    source: str = "file"  # "registry", "file", "timm", "hf", "py"
    revision: str = ""  # hub revision (commit) of the weights, when known
    run: str = ""  # the training run a checkpoint of a series belongs to (`--model 'GLOB:name=RUN'`)
    training_step: dict | None = None  # {"value", "unit" (step | epoch), "from"} when the file or its name says
    build: tuple = ()  # timm models: (("arch", name), (option, value), ...) they were built with (timm_models.py)

    def architecture(self) -> dict:
        """The architecture as records and cache keys carry it (the timm build only where there is one, so the
        identity of every other model stays what it was)."""
        return {**asdict(self.arch), "num_heads": self.num_heads, **({"build": dict(self.build)} if self.build else {})}


@contextlib.contextmanager
def ieee_fp32():
    """Float32 convolutions and matmuls without TensorFloat-32 inside, the caller's settings back afterwards.

    On CUDA, cuDNN runs float32 convolutions (the ViT's patch embedding) in TF32 by default, and a training loop's
    `torch.set_float32_matmul_precision("high")` does the same to every matmul: features then move by ~1e-3 from
    the CPU's, far outside the 1e-5 the loaders are held to. Only the global flags are touched (no CUDA needed)."""
    backends = torch.backends
    if hasattr(backends.cudnn, "conv") and hasattr(backends.cudnn.conv, "fp32_precision"):  # torch >= 2.9
        flags = [(backends.cudnn.conv, "fp32_precision", "ieee"), (backends.cuda.matmul, "fp32_precision", "ieee")]
    else:
        flags = [(backends.cudnn, "allow_tf32", False), (backends.cuda.matmul, "allow_tf32", False)]
    saved = [getattr(owner, name) for owner, name, _ in flags]
    try:
        for owner, name, value in flags:
            setattr(owner, name, value)
        yield
    finally:
        for (owner, name, _), value in zip(flags, saved):
            setattr(owner, name, value)


@contextlib.contextmanager
def evaluation_mode(module: torch.nn.Module):
    """Eval mode inside (dropout off, normalisation statistics frozen); afterwards every submodule is back in its own
    mode, so a model handed in by a training loop trains on as it was (parameters are never touched: features are
    computed under `torch.no_grad`)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class FeatureExtractor(torch.nn.Module):
    """A backbone run the way the method's own evaluation code runs it, with every feature built one way."""

    def __init__(self, backbone: Backbone, config: EvalConfig, info: ModelInfo, bf16: bool = False):
        super().__init__()
        self.backbone = backbone
        self.eval_config = config
        self.info = info
        self.bf16 = bf16

    @property
    def lowshot_feature(self) -> str:
        return self.eval_config.lowshot_feature

    def transform(self, resize: int, crop: int) -> TransformSpec:
        """The method's evaluation transform at a protocol's sizes (shorter side `resize`, centre crop `crop`)."""
        return eval_transform(self.eval_config, resize, crop)

    @property
    def patch_size(self) -> int:
        return self.backbone.patch_size

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def num_registers(self) -> int:
        return self.backbone.num_prefix_tokens - int(self.backbone.has_class_token)

    def features(self) -> tuple[str, ...]:
        """The feature names this model offers."""
        return tuple(n for n in FEATURES if self._unavailable(n) is None)

    def _unavailable(self, name: str) -> str | None:
        """Why `name` cannot be computed for this model, or None."""
        if name not in FEATURES:
            return f"unknown feature {name!r}; known: {', '.join(FEATURES)}"
        cls_based = name.startswith("cls") or (name == "linear_avgpool" and self.eval_config.linear_pool != "mae_fc_norm")
        if cls_based and not self.backbone.has_class_token:
            return (f"{self.info.name} has no class token (it pools globally): feature {name!r} needs one; use "
                    "'pooled' (the model's own pooled output) or 'patch'")
        if name == "registers" and not self.num_registers:
            return f"{self.info.name} has no register / storage tokens"
        if name == "linear_avgpool" and self.eval_config.linear_pool is None:
            return (f"{self.eval_config.method} has no avgpool linear-eval feature; its linear evaluation uses "
                    f"{self.eval_config.lowshot_feature!r}")
        if name == "pooled" and not self._has_pooled():
            return f"{self.info.name} has no pooled output of its own; use 'cls'"
        return None

    def _has_pooled(self) -> bool:
        return type(self.backbone).pooled is not Backbone.pooled

    def feature_dim(self, name: str) -> int:
        d, k = self.embed_dim, min(4, self.backbone.depth)
        if name == "linear_avgpool":
            return {"mae_fc_norm": d}.get(self.eval_config.linear_pool, 2 * d)
        return {"cls_last4": k * d, "patch_last4": k * d, "cls_avgpool": 2 * d, "cls_last4_avgpool": (k + 1) * d}.get(
            name, d)

    def precision(self, device: torch.device):
        """The numeric context of extraction on `device` (perf scripts time the bare forward under it too): bf16
        autocast on CUDA and on CPU alike (matmuls and attention in bfloat16, normalisations and softmax in
        float32, as torch's autocast lists them); without bf16, IEEE float32 on CUDA too (`ieee_fp32`). The features
        come back in float32 either way."""
        if self.bf16:
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return ieee_fp32() if device.type == "cuda" else contextlib.nullcontext()

    @torch.no_grad()
    def extract(self, images: torch.Tensor, names: list[str] | tuple[str, ...] = ("cls",)) -> dict[str, torch.Tensor]:
        """images: float [B, 3, H, W], already normalised. Returns {name: float32 tensor}."""
        if isinstance(names, str):
            names = [names]
        for name in names:
            if (why := self._unavailable(name)) is not None:
                raise ValueError(why)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
        images = images.to(self.device, torch.float32)
        keep = min(4, self.backbone.depth) if {"cls_last4", "patch_last4", "cls_last4_avgpool"} & set(names) else 1
        p = self.backbone.num_prefix_tokens
        with evaluation_mode(self.backbone), self.precision(images.device):
            outs = self.backbone.block_outputs(images, keep)
            normed = [self.backbone.norm(o) for o in outs]
            last, last_normed = outs[-1], normed[-1]
            cls, patches = last_normed[:, 0], last_normed[:, p:]
            result = {}
            for name in names:
                if name == "cls":
                    f = cls
                elif name == "patch":
                    f = patches
                elif name == "registers":
                    f = last_normed[:, 1:p]
                elif name in ("cls_last4", "cls_last4_avgpool"):
                    f = torch.cat([n[:, 0] for n in normed] + ([patches.mean(1)] if name.endswith("avgpool") else []),
                                  dim=-1)
                elif name == "patch_last4":
                    f = torch.cat([n[:, p:] for n in normed], dim=-1)
                elif name == "cls_prenorm":
                    f = last[:, 0]
                elif name == "cls_avgpool":
                    f = torch.cat([cls, patches.mean(1)], dim=-1)
                elif name == "pooled":
                    f = self.backbone.pooled(last_normed)
                else:
                    f = self._linear_pool(last[:, p:], cls, patches)
                result[name] = f.float()
        return result

    def _linear_pool(self, prenorm_patches: torch.Tensor, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        pool = self.eval_config.linear_pool
        if pool == "mae_fc_norm":  # fresh LayerNorm (weight 1, bias 0) over the mean of pre-norm patch tokens
            return F.layer_norm(prenorm_patches.mean(1).float(), (prenorm_patches.shape[-1],), eps=1e-6)
        avg = patches.mean(1)
        if pool == "interleave":  # DINO: [c0, a0, c1, a1, ...]
            return torch.stack([cls, avg], dim=-1).flatten(1)
        return torch.cat([cls, avg], dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.extract(images, [self.lowshot_feature])[self.lowshot_feature]
