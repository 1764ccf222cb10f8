"""timm architectures: built by name with build options, their weights read from a file, their own data config.

The one place where the suite builds a timm model and reads its weights, for both ways of naming one:
- `timm:<arch>[:key=value...]` (model_zoo/sources.py): the weights of the pretrained tag from the hub, or
  `--weights-file`;
- a plain timm state dict given as a checkpoint file (`torch.save(timm.create_model(ARCH).state_dict(), f)` or a
  safetensors of it) with `--arch <arch>[:key=value...]`: the generic method `timm` (model_zoo/loading.py).

An architecture spec is a timm model name (with its pretrained tag, which decides the data config:
`vit_small_patch16_224.dino`) and build options, `timm.create_model` keyword arguments written `key=value`
(`vit_small_patch16_224:img_size=64:patch_size=8`); values are read as integers, numbers, true / false / none,
else text. The model is built without a classifier (`num_classes=0`) and with dynamic image sizes where timm
has them; the file's classifier is dropped, its tensors go through the architecture's own checkpoint filter (as
timm's pretrained loading does: release formats converted, position / patch embedding resampled to the build,
with a warning) and are loaded strictly: a file that does not fit is refused in one line naming it, never
half-loaded.
"""
from __future__ import annotations

import re
import sys
import warnings

import torch

from .errors import BadInputError, LowshotWarning, UnknownNameError
from .errors import first_line as _first_line
from .formats import check_fits
from .safe_load import CheckpointError, load_checkpoint

# Set by the suite (or unsafe: they fetch or read files); refused as build options.
RESERVED_OPTIONS = {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir",
                    "num_classes", "features_only", "in_chans", "scriptable", "exportable", "no_jit", "device",
                    "dtype", "model_name", "dynamic_img_size"}
OPTION = re.compile(r"[a-z_][a-z0-9_]*$")


def parse_arch(spec: str, what: str) -> tuple[str, dict]:
    """`vit_small_patch16_224.dino:img_size=64` -> ("vit_small_patch16_224.dino", {"img_size": 64}); `what` (the
    flag or model it came from) names it in errors."""
    arch, *parts = spec.split(":")
    options = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or not OPTION.match(key) or not value:
            raise BadInputError(f"{what}: {part!r} is not a build option key=value (e.g. {arch}:img_size=64)")
        if key in RESERVED_OPTIONS:
            raise BadInputError(f"{what}: {key}= is not a build option the suite passes on (it sets it itself, or "
                                "it would read files)")
        if key in options:
            raise BadInputError(f"{what}: build option {key}= given twice")
        options[key] = _value(value)
    if not arch:
        raise BadInputError(f"{what}: name the timm architecture before its build options")
    return arch, options


def _value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def arch_text(arch: str, options: dict) -> str:
    """The spec back as text (options in the order given)."""
    return ":".join([arch, *(f"{k}={'none' if v is None else str(v).lower() if isinstance(v, bool) else v}"
                             for k, v in options.items())])


def build_record(arch: str, options: dict) -> tuple:
    """The build as (key, value) pairs for the model's identity (`ModelInfo.build`): two builds never share
    cached features or records."""
    return (("arch", arch), *sorted(options.items()))


def check_known(arch: str, what: str) -> None:
    import timm

    if not timm.is_model(arch.split(".")[0]):
        raise UnknownNameError(f"{what}: timm has no model {arch!r} (list them with timm.list_models('*dino*', "
                               "pretrained=True))")


def build_model(arch: str, options: dict, what: str) -> torch.nn.Module:
    """`timm.create_model(arch, **options)` without weights or classifier, dynamic image sizes where it has them."""
    import timm

    check_known(arch, what)
    try:
        try:
            model = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True, **options)
        except TypeError as e:
            if "dynamic_img_size" not in str(e):
                raise
            model = timm.create_model(arch, pretrained=False, num_classes=0, **options)  # no dynamic sizes
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as e:
        given = f" with {arch_text('', options)[1:]}" if options else ""
        raise BadInputError(f"{what}: timm cannot build {arch}{given} ({type(e).__name__}: {_first_line(e)})") \
            from None
    return model.eval()


def load_weights(model: torch.nn.Module, arch: str, path, trust: bool, what: str) -> None:
    """Read `path` into `model` (see the module docstring); CheckpointError naming the file when it does not fit."""
    sd = _state_dict(load_checkpoint(path, trust=trust), path)
    classifiers = model.pretrained_cfg.get("classifier") or ()
    for name in (classifiers,) if isinstance(classifiers, str) else classifiers:  # built with num_classes=0
        sd = {k: v for k, v in sd.items() if not k.startswith(f"{name}.")}
    source = f"{path} for {what}"
    filtered = _checkpoint_filter(arch)
    if filtered is not None:
        before = {k: tuple(v.shape) for k, v in sd.items()}
        try:
            sd = filtered(sd, model)
        except Exception as e:  # a file of another architecture makes the filter fail in many ways
            check_fits(model, sd, source)  # the keys say what is wrong, when they do
            raise CheckpointError(f"{source}: timm's checkpoint filter cannot read it ({type(e).__name__}: "
                                  f"{_first_line(e)})") from None
        resampled = [f"{k} {before[k]} -> {tuple(v.shape)}" for k, v in sd.items()
                     if k in before and before[k] != tuple(v.shape)]
        if resampled:
            warnings.warn(f"{source}: timm's checkpoint filter resampled {', '.join(resampled)} to fit the build; "
                          "pass the build options it was saved with (e.g. :img_size=N) to read it unchanged",
                          LowshotWarning, stacklevel=3)
    check_fits(model, sd, source)
    model.load_state_dict(sd, strict=True)


def _state_dict(ckpt, path) -> dict:
    """The tensors of a plain state dict: the file itself, a safetensors file's tensors, or the `model` /
    `state_dict` entry timm's own loader also reads."""
    if isinstance(ckpt, dict) and "metadata" in ckpt and isinstance(ckpt.get("state_dict"), dict):
        ckpt = ckpt["state_dict"]  # safe_load's form of a safetensors file
    if isinstance(ckpt, dict) and not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        ckpt = next((ckpt[k] for k in ("model", "state_dict") if isinstance(ckpt.get(k), dict)), ckpt)
    if not isinstance(ckpt, dict) or not ckpt or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise CheckpointError(f"{path}: not a plain state dict (a mapping of names to tensors, as "
                              "timm.create_model(...).state_dict() saves)")
    return ckpt


def _checkpoint_filter(arch: str):
    """The `checkpoint_filter_fn` of the module that defines `arch` (timm's pretrained loading applies it), or
    None."""
    import timm

    entrypoint = timm.models.model_entrypoint(arch.split(".")[0])
    return getattr(sys.modules.get(entrypoint.__module__), "checkpoint_filter_fn", None)


def data_config(model: torch.nn.Module) -> tuple[str, tuple, tuple]:
    """(interpolation, mean, std) of a timm model's pretrained config: its own evaluation preprocessing."""
    import timm

    cfg = timm.data.resolve_data_config({}, model=model)
    return cfg["interpolation"], tuple(cfg["mean"]), tuple(cfg["std"])


def timm_backbone(arch: str, options: dict, path, trust: bool, what: str):
    """(TimmBackbone, interpolation, mean, std) of `arch` built with `options`, its weights read from `path`."""
    from .backbones import TimmBackbone

    model = build_model(arch, options, what)
    try:  # before reading the file: a model the suite cannot read tokens from is refused at once
        backbone = TimmBackbone(model)
        backbone.block_outputs(torch.zeros(1, 3, *_probe_size(model)), 1)
    except (TypeError, AssertionError, AttributeError) as e:
        raise BadInputError(f"{what} is not a token model (ViT-like, forward_intermediates(output_fmt='NLC')): "
                            f"{_first_line(e)}") from None
    load_weights(model, arch, path, trust, what)
    return (backbone, *data_config(model))


def _probe_size(model) -> tuple[int, int]:
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", (16, 16))
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", (2, 2))
    return patch[0] * grid[0], patch[1] * grid[1]
