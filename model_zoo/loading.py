"""Loading: a name or a path -> `FeatureExtractor` (model_zoo/extractor.py), through the registry, a release file
(DINO, iBOT, MAE, MSN, DINOv2, DINOv3, this project's) or another source (`timm:<name>`, `hf:<repo or directory>`,
`py:<module>:<factory>`; model_zoo/sources.py). This module sits above both the interface and the sources.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from . import download
from .errors import BadInputError, LowshotWarning, MissingFileError, UnknownNameError
from .extractor import FeatureExtractor, ModelInfo
from .formats import LAYOUTS, Architecture, detect_layout, infer_architecture
from .registry import GENERIC_METHOD, METHODS, REGISTRY, EvalConfig, ModelEntry, eval_config, get_entry
from .release_files import build_backbone
from .safe_load import CheckpointError, load_checkpoint
from .sources import SOURCE_PREFIXES, load_source, timm_file_source

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".tar", ".safetensors", ".bin", ".ckpt")
PUBLIC_HEAD_DIM = 64  # ViT-S/6, B/12, L/16, H/16 heads
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.pth$")  # torch.hub convention: the sha256 prefix in the file name


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
               weights_file: str | Path | None = None, arch: str | None = None) -> FeatureExtractor:
    """Load a model as a FeatureExtractor: a registry name (downloaded and cached), a release file, or a model
    of another source (`timm:<name>`, `hf:<repo or directory>`, `py:<module>:<factory>`; `weights_file` loads
    a local weights file into a timm model instead of fetching it).

    For a file: `method` picks the evaluation rules (low-shot feature, pos-embed rule); `num_heads` is required
    (it cannot be inferred from weights) unless the file carries a config; `layout` is detected unless given.
    `weights="student"` selects the student / online encoder of a full training checkpoint.
    `method="timm"` (the generic method; implied by `arch`) reads a plain timm state dict as the timm architecture
    `arch` (`vit_small_patch16_224[:img_size=64...]`) with that architecture's own data config and feature.
    """
    if str(name_or_path).startswith(SOURCE_PREFIXES):
        if arch:
            raise BadInputError(f"--arch (Python: arch=) goes with a checkpoint file; {name_or_path} names its own "
                                "model (build options: timm:<arch>:img_size=64)")
        backbone, config, info = load_source(str(name_or_path), weights_file, progress, trust)
        return FeatureExtractor(backbone, config, info, bf16=bf16).to(device)
    entry, path, digest = resolve_checkpoint(name_or_path, progress, weights_file)
    if method == GENERIC_METHOD or arch:
        backbone, config, info = _generic_timm(entry, path, digest, method, arch, num_heads, layout, weights, trust)
        return FeatureExtractor(backbone, config, info, bf16=bf16).to(device)
    ckpt = load_checkpoint(path, trust=trust)
    layout = layout or (entry.layout if entry else detect_layout(ckpt))
    if layout not in LAYOUTS:
        raise UnknownNameError(f"unknown layout {layout!r}; known: {', '.join(sorted(LAYOUTS))}")
    config = ckpt.get("config", {}) if layout == "lowshot" else {}
    step = training_step(ckpt, layout, config)
    known = entry.method if entry else config.get("method")
    method = method or known
    if method not in METHODS:
        raise BadInputError(f"{path}: name the evaluation rules with --method (Python: method=), one of "
                            f"{', '.join(sorted(METHODS))}, or {GENERIC_METHOD} with --arch ARCH (Python: arch=) for "
                            f"a plain timm state dict (got {method!r})")
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
        raise BadInputError(f"{path}: the attention heads cannot be inferred from the weights; pass --num-heads N "
                            "(Python: num_heads=; ViT-S: 6, ViT-B: 12, ViT-L: 16, ViT-H: 16)")
    if given_heads and not entry and arch.embed_dim != PUBLIC_HEAD_DIM * num_heads:
        public = (f"num_heads={arch.embed_dim // PUBLIC_HEAD_DIM} would give it" if arch.embed_dim % PUBLIC_HEAD_DIM == 0
                  else "no head count gives it on this width")
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
                     source="registry" if entry else "file", training_step=step)
    return FeatureExtractor(backbone, config, info, bf16=bf16).to(device)


def _generic_timm(entry, path: Path, digest: str, method, arch, num_heads, layout, weights, trust: bool):
    """The generic method: a plain timm state dict read as the timm architecture `arch`; the options that belong to
    the release methods are refused rather than ignored."""
    if entry:
        raise BadInputError(f"--method {GENERIC_METHOD} / --arch go with a checkpoint file; {entry.name} is a "
                            f"registry model with its own rules ({entry.method})")
    if method not in (None, GENERIC_METHOD):
        raise BadInputError(f"{path}: --arch (Python: arch=) goes with --method {GENERIC_METHOD} (a plain timm state "
                            f"dict), not --method {method}")
    if not arch:
        raise BadInputError(f"{path}: --method {GENERIC_METHOD} reads a plain timm state dict as a timm architecture: "
                            "name it with --arch (Python: arch=), e.g. --arch vit_small_patch16_224, with build "
                            "options --arch vit_small_patch16_224:img_size=64")
    given = [flag for flag, value in (("--num-heads", num_heads), ("--layout", layout),
                                      ("--weights student", weights == "student")) if value]
    if given:
        raise BadInputError(f"{path}: {', '.join(given)} go(es) with the release methods; with --method "
                            f"{GENERIC_METHOD} the timm architecture ({arch}) decides")
    return timm_file_source(path, arch, digest, trust)


def training_step(ckpt, layout: str, config: dict) -> dict | None:
    """{"value", "unit", "from"} of the training step a checkpoint stores: the steps done of a `lowshot pretrain`
    backbone, the epoch of a DINO / iBOT full checkpoint or an MSN one; None for the other layouts."""
    if layout == "lowshot" and isinstance(config.get("steps_done"), int):
        return {"value": config["steps_done"], "unit": "step", "from": "checkpoint (steps_done)"}
    if layout in ("dino_full", "ibot_full", "msn") and isinstance(ckpt.get("epoch"), int):
        return {"value": ckpt["epoch"], "unit": "epoch", "from": "checkpoint (epoch)"}
    return None


def _heads_from_rope(sd: dict, arch: Architecture) -> int | None:
    """DINOv3 stores head_dim / 4 RoPE periods: the one file format whose head count the weights do give."""
    periods = sd.get("rope_embed.periods")
    return arch.embed_dim // (4 * periods.numel()) if periods is not None else None


def vit_in_memory(vit: torch.nn.Module, method: str, num_heads: int, name: str) -> FeatureExtractor:
    """A timm VisionTransformer held in memory (`lowshot pretrain`'s EMA teacher during training) evaluated by
    `method`'s rules, as `load_model` evaluates the same weights saved to a file; its identity is a digest of its
    weights now (the same module one step later is another model)."""
    from .backbones import ViTBackbone
    from .sources import state_digest

    config = eval_config(method)
    info = ModelInfo(name, method, f"<in memory: {type(vit).__name__}>", state_digest(vit), "lowshot", "teacher",
                     infer_architecture(vit.state_dict()), num_heads, source="memory",
                     revision="in memory: weights digest")
    return FeatureExtractor(ViTBackbone(vit, config.pos_embed_rule), config, info)
