"""The one feature interface: `load_model(name_or_path, ...)` -> `FeatureExtractor.extract(images, names)`.

Model sources: a registry name, a release file (DINO, iBOT, MAE, MSN, DINOv2, DINOv3, this project's), or
`timm:<name>`, `hf:<repo or directory>`, `py:<module>:<factory>` (model_zoo/sources.py).

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
import os
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from . import download
from .backbones import Backbone
from .errors import BadInputError, LowshotWarning, MissingFileError, UnknownNameError
from .formats import LAYOUTS, Architecture, detect_layout, infer_architecture
from .registry import METHODS, REGISTRY, EvalConfig, ModelEntry, eval_config, get_entry
from .release_files import build_backbone
from .safe_load import CheckpointError, load_checkpoint
from .transforms import TransformSpec, eval_transform

FEATURES = ("cls", "patch", "registers", "cls_last4", "patch_last4", "cls_prenorm", "cls_avgpool",
            "cls_last4_avgpool", "linear_avgpool", "pooled")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".tar", ".safetensors", ".bin", ".ckpt")
PUBLIC_HEAD_DIM = 64  # ViT-S/6, B/12, L/16, H/16 heads
SOURCE_PREFIXES = ("timm:", "hf:", "py:")
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.pth$")  # torch.hub convention: the sha256 prefix in the file name


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


class FeatureExtractor(torch.nn.Module):
    """A backbone run the way the method's own evaluation code runs it, with every feature built one way."""

    def __init__(self, backbone: Backbone, config: EvalConfig, info: ModelInfo, bf16: bool = False):
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.eval_config = config
        self.info = info
        self.bf16 = bf16

    @property
    def lowshot_feature(self) -> str:
        return self.eval_config.lowshot_feature

    @property
    def knn_feature(self) -> str:
        return self.eval_config.knn_feature

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

    def _autocast(self, device: torch.device):
        if self.bf16 and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

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
        with self._autocast(images.device):
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


def _describe(config: EvalConfig) -> str:
    return (f"low-shot feature {config.lowshot_feature}, {config.interpolation} resize, "
            f"{config.pos_embed_rule} position rule")


def resolve_checkpoint(name_or_path: str | Path, progress: bool = True,
                       weights_file: str | Path | None = None) -> tuple[ModelEntry | None, Path, str]:
    """Registry name -> (entry, cached path, sha256), downloading if needed; a file path -> (None, path, sha256).
    A release handed out by a form (DINOv3) is found in the cache or given as `weights_file`; the sha256 prefix
    in its release name is checked (torch.hub's convention)."""
    if weights_file:
        entry = REGISTRY.get(str(name_or_path))
        if entry is None or not entry.release_file:
            raise BadInputError(f"--weights-file goes with a timm:<name> model or a registry entry without a URL "
                                f"({', '.join(n for n, e in REGISTRY.items() if e.release_file)}); pass a release "
                                "file as --model PATH")
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise MissingFileError(f"--weights-file {path}: no such file")
        return entry, path, _check_release_hash(path, entry.release_file)
    if str(name_or_path) in REGISTRY:
        entry = get_entry(str(name_or_path))
        if entry.bundled:
            path = Path(__file__).parent / entry.bundled
            digest = download._verify(path, entry.sha256, entry.name)
            return entry, path, digest
        if entry.release_file:  # handed out after a licence form: the user downloads it
            path = download.cache_dir() / entry.release_file
            if not path.exists():
                raise MissingFileError(
                    f"{entry.name}: {entry.release_file} is not in {path.parent}; its weights are handed out after a "
                    f"licence form ({entry.get_it}): download the file there, or pass its path "
                    f"(--model {entry.name} --weights-file /path/to/{entry.release_file})")
            return entry, path, _check_release_hash(path, entry.release_file)
        path, digest = download.fetch(entry.url, entry.file_name, entry.sha256, progress=progress)
        return entry, path, digest
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.exists():
        if os.sep in str(name_or_path) or path.suffix in CHECKPOINT_SUFFIXES:
            raise MissingFileError(f"checkpoint file {path} not found")
        get_entry(str(name_or_path))  # raises the "unknown model" error listing the registry
    return None, path, download.sha256_file(path)


def _check_release_hash(path: Path, release_file: str) -> str:
    """sha256 of `path`, whose first hex digits must be those in the release name (`...-08c60483.pth`)."""
    digest = download.sha256_file(path)
    match = HASH_IN_NAME.search(release_file)
    if match and not digest.startswith(match.group(1)):
        raise download.ChecksumError(f"{path}: the release {release_file} has sha256 {match.group(1)}..., this "
                                     f"file {digest[:len(match.group(1))]}...: damaged, incomplete or another file; "
                                     "download it again")
    return digest


def load_model(name_or_path: str | Path, method: str | None = None, num_heads: int | None = None,
               layout: str | None = None, weights: str = "teacher", device: str | torch.device = "cpu",
               bf16: bool = False, trust: bool = False, progress: bool = True,
               weights_file: str | Path | None = None) -> FeatureExtractor:
    """Load a model as a FeatureExtractor: a registry name (downloaded and cached), a release file, or a model
    of another source (`timm:<name>`, `hf:<repo or directory>`, `py:<module>:<factory>`; `weights_file` loads
    a local weights file into a timm model instead of fetching it).

    For a file: `method` picks the evaluation rules (low-shot feature, pos-embed rule); `num_heads` is required
    (it cannot be inferred from weights) unless the file carries a config; `layout` is detected unless given.
    `weights="student"` selects the student / online encoder of a full training checkpoint.
    """
    if str(name_or_path).startswith(SOURCE_PREFIXES):
        from .sources import load_source
        backbone, config, info = load_source(str(name_or_path), weights_file, progress)
        return FeatureExtractor(backbone, config, info, bf16=bf16).to(device)
    entry, path, digest = resolve_checkpoint(name_or_path, progress, weights_file)
    ckpt = load_checkpoint(path, trust=trust)
    layout = layout or (entry.layout if entry else detect_layout(ckpt))
    if layout not in LAYOUTS:
        raise UnknownNameError(f"unknown layout {layout!r}; known: {', '.join(sorted(LAYOUTS))}")
    config = ckpt.get("config", {}) if layout == "lowshot" else {}
    known = entry.method if entry else config.get("method")
    method = method or known
    if method not in METHODS:
        raise BadInputError(f"{path}: pass method= one of {sorted(METHODS)} (got {method!r})")
    release_methods = (known,) if known else LAYOUTS[layout].methods
    if release_methods and method not in release_methods:
        warnings.warn(f"{path}: its layout {layout} is a {' / '.join(release_methods)} release format, but the "
                      f"{method} evaluation rules are applied ({_describe(METHODS[method])}); pass the method "
                      "that trained it unless this is intended", LowshotWarning, stacklevel=2)
    sd = LAYOUTS[layout].state_dict(ckpt, weights)
    arch = infer_architecture(sd)
    given_heads = num_heads
    num_heads = num_heads or (entry.num_heads if entry else config.get("num_heads")) or _heads_from_rope(sd, arch)
    if not num_heads:
        raise BadInputError(f"{path}: num_heads cannot be inferred from the weights; pass num_heads= "
                            "(ViT-S: 6, ViT-B: 12, ViT-L: 16, ViT-H: 16)")
    if given_heads and not entry and arch.embed_dim != PUBLIC_HEAD_DIM * num_heads:
        public = (f"num_heads={arch.embed_dim // PUBLIC_HEAD_DIM} would give it" if arch.embed_dim % PUBLIC_HEAD_DIM == 0
                  else f"no head count gives it on this width")
        warnings.warn(f"{path}: num_heads={num_heads} on embed_dim {arch.embed_dim} gives head_dim "
                      f"{arch.embed_dim / num_heads:g}, but every public ViT has head_dim {PUBLIC_HEAD_DIM} ({public}); "
                      "the heads cannot be read from the weights, and a wrong count gives wrong features",
                      LowshotWarning, stacklevel=2)
    if entry:  # build what the registry says, so a file of another architecture is refused with its keys listed
        grid = entry.img_size // entry.patch_size if arch.position == "learned" else 0
        arch = replace(arch, embed_dim=entry.embed_dim, depth=entry.depth, patch_size=entry.patch_size, grid=grid)
    config = entry.eval_config if entry and method == entry.method else eval_config(method)
    backbone = build_backbone(arch, num_heads, sd, config.pos_embed_rule, str(path))
    info = ModelInfo(entry.name if entry else path.name, method, str(path), digest, layout, weights, arch, num_heads,
                     source="registry" if entry else "file")
    return FeatureExtractor(backbone, config, info, bf16=bf16).to(device)


def _heads_from_rope(sd: dict, arch: Architecture) -> int | None:
    """DINOv3 stores head_dim / 4 RoPE periods: the one file format whose head count the weights do give."""
    periods = sd.get("rope_embed.periods")
    return arch.embed_dim // (4 * periods.numel()) if periods is not None else None
