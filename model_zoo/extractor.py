"""The one feature interface: `load_model(name_or_path, ...)` -> `FeatureExtractor.extract(images, names)`.

Feature names (the contract tasks and tests rely on):
  cls            final-norm CLS of the last block
  patch          final-norm patch tokens [B, N, D]
  cls_last4      normed CLS of the last min(4, depth) blocks, oldest first, concatenated
  patch_last4    normed patch tokens of the last min(4, depth) blocks, concatenated on channels [B, N, k*D]
  cls_prenorm    last-block CLS without the final norm (MSN's low-shot feature)
  linear_avgpool the method's own linear-eval pooled feature (DINO interleaved, iBOT concat, MAE fresh fc_norm)
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from . import download
from .errors import BadInputError, LowshotWarning, MissingFileError, UnknownNameError
from .formats import LAYOUTS, Architecture, check_fits, detect_layout, infer_architecture
from .pos_embed import resize_pos_embed
from .registry import METHODS, REGISTRY, EvalConfig, ModelEntry, eval_config, get_entry
from .safe_load import CheckpointError, load_checkpoint
from .transforms import TransformSpec, eval_transform

FEATURES = ("cls", "patch", "cls_last4", "patch_last4", "cls_prenorm", "linear_avgpool")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".tar", ".safetensors", ".bin", ".ckpt")
PUBLIC_HEAD_DIM = 64  # ViT-S/6, B/12, L/16, H/16 heads


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


class FeatureExtractor(torch.nn.Module):
    """A timm VisionTransformer run the way the method's own evaluation code runs it."""

    def __init__(self, vit: VisionTransformer, config: EvalConfig, info: ModelInfo, bf16: bool = False):
        super().__init__()
        self.vit = vit.eval().requires_grad_(False)
        self.vit.patch_embed.strict_img_size = False  # sizes are checked here, pos embeds resized by the rule
        self.eval_config = config
        self.info = info
        self.bf16 = bf16
        self._pos_cache: dict[tuple, torch.Tensor] = {}

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
        return self.info.arch.patch_size

    @property
    def embed_dim(self) -> int:
        return self.info.arch.embed_dim

    @property
    def device(self) -> torch.device:
        return self.vit.cls_token.device

    def feature_dim(self, name: str) -> int:
        d, k = self.embed_dim, min(4, self.info.arch.depth)
        return {"cls": d, "patch": d, "cls_prenorm": d, "cls_last4": k * d, "patch_last4": k * d,
                "linear_avgpool": d if self.eval_config.linear_pool == "mae_fc_norm" else 2 * d}[name]

    def _pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        key = (grid_h, grid_w, self.vit.pos_embed.device)
        if key not in self._pos_cache:  # the rule is deterministic and weights are frozen: compute once per grid
            self._pos_cache[key] = resize_pos_embed(self.vit.pos_embed, grid_h, grid_w, self.eval_config.pos_embed_rule)
        return self._pos_cache[key]

    def _block_outputs(self, x: torch.Tensor, keep_last: int) -> list[torch.Tensor]:
        """Token sequences [B, 1+N, D] after each of the last `keep_last` blocks, before the final norm."""
        b, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"input size {h}x{w} is not divisible by the patch size {p}")
        vit = self.vit
        tokens = vit.patch_embed(x)
        tokens = torch.cat([vit.cls_token.expand(b, -1, -1), tokens], dim=1) + self._pos_embed(h // p, w // p)
        outs = []
        depth = len(vit.blocks)
        for i, block in enumerate(vit.blocks):
            tokens = block(tokens)
            if i >= depth - keep_last:
                outs.append(tokens)
        return outs

    def _autocast(self, device: torch.device):
        if self.bf16 and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def extract(self, images: torch.Tensor, names: list[str] | tuple[str, ...] = ("cls",)) -> dict[str, torch.Tensor]:
        """images: float [B, 3, H, W], already normalised. Returns {name: float32 tensor}."""
        if isinstance(names, str):
            names = [names]
        unknown = [n for n in names if n not in FEATURES]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; known: {FEATURES}")
        if "linear_avgpool" in names and self.eval_config.linear_pool is None:
            raise ValueError(f"{self.eval_config.method} has no avgpool linear-eval feature; its linear evaluation uses "
                             f"{self.eval_config.lowshot_feature!r}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
        images = images.to(self.device, torch.float32)
        keep = min(4, len(self.vit.blocks)) if {"cls_last4", "patch_last4"} & set(names) else 1
        with self._autocast(images.device):
            outs = self._block_outputs(images, keep)
            normed = [self.vit.norm(o) for o in outs]
            last, last_normed = outs[-1], normed[-1]
            result = {}
            for name in names:
                if name == "cls":
                    f = last_normed[:, 0]
                elif name == "patch":
                    f = last_normed[:, 1:]
                elif name == "cls_last4":
                    f = torch.cat([n[:, 0] for n in normed], dim=-1)
                elif name == "patch_last4":
                    f = torch.cat([n[:, 1:] for n in normed], dim=-1)
                elif name == "cls_prenorm":
                    f = last[:, 0]
                else:
                    f = self._linear_pool(last, last_normed)
                result[name] = f.float()
        return result

    def _linear_pool(self, last: torch.Tensor, last_normed: torch.Tensor) -> torch.Tensor:
        pool = self.eval_config.linear_pool
        if pool == "mae_fc_norm":  # fresh LayerNorm (weight 1, bias 0) over the mean of pre-norm patch tokens
            return F.layer_norm(last[:, 1:].mean(1).float(), (last.shape[-1],), eps=1e-6)
        cls, avg = last_normed[:, 0], last_normed[:, 1:].mean(1)
        if pool == "interleave":  # DINO: [c0, a0, c1, a1, ...]
            return torch.stack([cls, avg], dim=-1).flatten(1)
        return torch.cat([cls, avg], dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.extract(images, [self.lowshot_feature])[self.lowshot_feature]


def _describe(config: EvalConfig) -> str:
    return (f"low-shot feature {config.lowshot_feature}, {config.interpolation} resize, "
            f"{config.pos_embed_rule} position rule")


def _build_vit(arch: Architecture, num_heads: int) -> VisionTransformer:
    if arch.embed_dim % num_heads:
        raise CheckpointError(f"num_heads={num_heads} does not divide embed_dim={arch.embed_dim}")
    return VisionTransformer(img_size=arch.img_size, patch_size=arch.patch_size, embed_dim=arch.embed_dim,
                             depth=arch.depth, num_heads=num_heads, mlp_ratio=arch.mlp_ratio, qkv_bias=arch.qkv_bias,
                             class_token=True, global_pool="token", num_classes=0)


def resolve_checkpoint(name_or_path: str | Path, progress: bool = True) -> tuple[ModelEntry | None, Path, str]:
    """Registry name -> (entry, cached path, sha256), downloading if needed; a file path -> (None, path, sha256)."""
    if str(name_or_path) in REGISTRY:
        entry = get_entry(str(name_or_path))
        if entry.bundled:
            path = Path(__file__).parent / entry.bundled
            digest = download._verify(path, entry.sha256, entry.name)
            return entry, path, digest
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


def load_model(name_or_path: str | Path, method: str | None = None, num_heads: int | None = None,
               layout: str | None = None, weights: str = "teacher", device: str | torch.device = "cpu",
               bf16: bool = False, trust: bool = False, progress: bool = True) -> FeatureExtractor:
    """Load a registry model (downloaded and cached) or a checkpoint file as a FeatureExtractor.

    For a file: `method` picks the evaluation rules (low-shot feature, pos-embed rule); `num_heads` is required
    (it cannot be inferred from weights) unless the file carries a config; `layout` is detected unless given.
    `weights="student"` selects the student / online encoder of a full training checkpoint.
    """
    entry, path, digest = resolve_checkpoint(name_or_path, progress)
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
    given_heads = num_heads
    num_heads = num_heads or (entry.num_heads if entry else config.get("num_heads"))
    if not num_heads:
        raise BadInputError(f"{path}: num_heads cannot be inferred from the weights; pass num_heads= "
                            "(ViT-S: 6, ViT-B: 12, ViT-L: 16, ViT-H: 16)")
    sd = LAYOUTS[layout].state_dict(ckpt, weights)
    arch = infer_architecture(sd)
    if given_heads and not entry and arch.embed_dim != PUBLIC_HEAD_DIM * num_heads:
        public = (f"num_heads={arch.embed_dim // PUBLIC_HEAD_DIM} would give it" if arch.embed_dim % PUBLIC_HEAD_DIM == 0
                  else f"no head count gives it on this width")
        warnings.warn(f"{path}: num_heads={num_heads} on embed_dim {arch.embed_dim} gives head_dim "
                      f"{arch.embed_dim / num_heads:g}, but every public ViT has head_dim {PUBLIC_HEAD_DIM} ({public}); "
                      "the heads cannot be read from the weights, and a wrong count gives wrong features",
                      LowshotWarning, stacklevel=2)
    if entry:  # build what the registry says, so a file of another architecture is refused with its keys listed
        arch = Architecture(entry.embed_dim, entry.depth, entry.patch_size, entry.img_size // entry.patch_size,
                            arch.mlp_ratio, True)
    vit = _build_vit(arch, num_heads)
    check_fits(vit, sd, str(path))
    vit.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    info = ModelInfo(entry.name if entry else path.name, method, str(path), digest, layout, weights, arch, num_heads)
    config = entry.eval_config if entry and method == entry.method else eval_config(method)
    return FeatureExtractor(vit, config, info, bf16=bf16).to(device)
