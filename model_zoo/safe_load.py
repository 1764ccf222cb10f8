"""Safe checkpoint loading: tensors only, plus exactly what real release files need.

DINO and iBOT full checkpoints pickle their training `args` as an `argparse.Namespace`; that class is the
only global allowed. Any other pickled object is refused unless the caller passes `trust=True`.
Files ending in `.safetensors` (this project's own checkpoints) are read with safetensors.
"""
from __future__ import annotations

import argparse
import json
import pickle
import re
from pathlib import Path

import torch

from .errors import BadInputError, MissingFileError

ALLOWED_GLOBALS = [argparse.Namespace]


class CheckpointError(BadInputError):
    """The file is not a checkpoint this project can read (corrupt, truncated, wrong layout...)."""


class UnsafeCheckpointError(CheckpointError):
    """The file pickles an object outside the allow-list."""


def load_checkpoint(path: str | Path, trust: bool = False):
    """Load a checkpoint on CPU. Returns the unpickled object (safetensors: {"state_dict", "metadata"})."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise MissingFileError(f"checkpoint file {path} not found")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # random or truncated bytes make the unpickler fail in many ways (IndexError, KeyError, ...)
        raise refused_or_unreadable(path, e) from e


def refused_or_unreadable(path, error: Exception) -> CheckpointError:
    """The one-line error for a pickle torch would not load: the global it refused and how to opt in
    (`--trust-checkpoint`), else what is wrong with the file; never torch's advice to load with
    weights_only=False. Also used for the pickles Hugging Face directories hold (`pytorch_model.bin`)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error)) if isinstance(error, pickle.UnpicklingError) else None
    if found:
        return UnsafeCheckpointError(
            f"{path} pickles {found.group(1)}, outside the allow-list (tensors, a release file's argparse.Namespace); "
            "refused: loading it could run arbitrary code. If you trust this file, pass --trust-checkpoint "
            "(Python: trust=True)")
    return CheckpointError(f"{path} is not a readable torch checkpoint (truncated or corrupt?): {_detail(error)}")


def _detail(error: Exception) -> str:
    """What went wrong, without torch's advice to load with weights_only=False (the unsafe load this module
    exists to avoid): the unpickler's own line when torch's message has one, else its first line."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    if any("WeightsUnpickler error" in ln for ln in lines):
        i = next(i for i, ln in enumerate(lines) if "WeightsUnpickler error" in ln)
        rest = lines[i].split("WeightsUnpickler error:", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
        return rest or "unreadable pickle"
    safe = [ln for ln in lines if "weights_only" not in ln]
    return safe[0] if safe else type(error).__name__


def _load_safetensors(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    try:
        config = json.loads(metadata["config"]) if "config" in metadata else {}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its 'config' metadata is not JSON ({e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: its 'config' metadata is JSON but not an object ({type(config).__name__})")
    return {"state_dict": state, "metadata": metadata, "config": config}
