"""The two files a pre-training run writes.

Training checkpoint (`checkpoint.pt`, for --resume): torch.save of plain containers and tensors only, so
`torch.load(weights_only=True)` reads it:
  {"format": "lowshot-pretrain-v1", "step", "config": JSON string,
   "student", "teacher", "heads", "teacher_heads", "centers", "mask_token": state dicts (absent parts omitted),
   "optimizer": AdamW state dict, "scheduler": {"step"} (schedules are pure functions of the step),
   "rng": {"torch", "cuda", "numpy", "python"}}
Backbone (`<name>.safetensors`, the "lowshot" layout `load_model` reads): the teacher's (MAE: the encoder's)
timm VisionTransformer tensors and metadata {"format": "lowshot-v1", "config": JSON of the run's config +
what evaluation needs (method, num_heads, embed_dim, depth, patch_size, img_size) + steps done}.
Both are written to a temporary file in the target directory, then renamed: a crash never leaves half a file.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..files import atomic_write, atomic_write_bytes

TRAINING_FORMAT = "lowshot-pretrain-v1"
BACKBONE_FORMAT = "lowshot-v1"


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _sections(model: nn.Module) -> dict:
    """The model's state dict grouped by its top-level part (student, teacher, heads, ...)."""
    out: dict = {}
    for key, value in model.state_dict().items():
        part, _, rest = key.partition(".")
        out.setdefault(part, {})[rest] = value
    return out


def save_training_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int,
                             config_json: str) -> Path:
    state = {"format": TRAINING_FORMAT, "step": step, "config": config_json, **_sections(model),
             "optimizer": optimizer.state_dict(), "scheduler": {"step": step}, "rng": rng_state()}
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                             map_location="cpu") -> dict:
    """Restore model, optimizer and RNG states in place; returns the checkpoint (its "step", "config")."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if state.get("format") != TRAINING_FORMAT:
        raise ValueError(f"{path} is not a {TRAINING_FORMAT} training checkpoint")
    parts = {key.partition(".")[0] for key in model.state_dict()}
    flat = {(f"{part}.{k}" if k else part): v for part in parts for k, v in state[part].items()}
    model.load_state_dict(flat, strict=True)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return state


def backbone_config(cfg, steps_done: int, data_identity: str = "") -> dict:
    from dataclasses import asdict

    import timm

    return {**asdict(cfg), "steps_done": steps_done, "data_identity": data_identity,
            "torch_version": torch.__version__, "timm_version": timm.__version__}


_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
           torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


def safetensors_bytes(tensors: dict, metadata: dict) -> bytes:
    """A .safetensors file as bytes, with a canonical header (sorted keys): the same tensors and metadata give
    the same bytes. (`safetensors.torch.save` orders the metadata of a Rust HashMap, so its bytes vary.)"""
    header, chunks, offset = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        data = t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def save_backbone(path: Path, vit: nn.Module, config: dict, dtype: torch.dtype = torch.float16) -> Path:
    """The lowshot-layout .safetensors: timm VisionTransformer names, `dtype` tensors, config metadata."""
    missing = [k for k in ("method", "num_heads", "embed_dim", "depth", "patch_size", "img_size") if k not in config]
    if missing:
        raise ValueError(f"backbone config lacks {missing}")
    tensors = {k: v.detach().to("cpu", dtype) for k, v in vit.state_dict().items()}
    metadata = {"format": BACKBONE_FORMAT, "config": json.dumps(config, sort_keys=True)}
    data = safetensors_bytes(tensors, metadata)
    return atomic_write_bytes(path, data)
