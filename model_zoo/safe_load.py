"""Safe checkpoint loading: tensors only, plus exactly what real release files need.

DINO and iBOT full checkpoints pickle their training `args` as an `argparse.Namespace`; that class is the
only global allowed. Any other pickled object is refused unless the caller passes `trust=True`.
Files ending in `.safetensors` (this project's own checkpoints) are read with safetensors.
"""
from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import torch

ALLOWED_GLOBALS = [argparse.Namespace]


class CheckpointError(RuntimeError):
    """The file is not a checkpoint this project can read (corrupt, truncated, wrong layout...)."""


class UnsafeCheckpointError(CheckpointError):
    """The file pickles an object outside the allow-list."""


def load_checkpoint(path: str | Path, trust: bool = False):
    """Load a checkpoint on CPU. Returns the unpickled object (safetensors: {"state_dict", "metadata"})."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        if "Unsupported global" in message or "not an allowed global" in message or "GLOBAL" in message:
            detail = next((ln.strip() for ln in message.splitlines() if "global" in ln.lower()), message)
            raise UnsafeCheckpointError(
                f"{path} pickles an object outside the allow-list (tensors and argparse.Namespace): {detail}. "
                "Loading it could run arbitrary code. If you trust this file, pass trust=True "
                "(CLI: --trust-checkpoint).") from None
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {message.splitlines()[0]}") from None
    except Exception as e:  # random or truncated bytes make the unpickler fail in many ways (IndexError, KeyError, ...)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is not a readable torch checkpoint (truncated or corrupt?): {first}") from None


def _load_safetensors(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    config = json.loads(metadata["config"]) if "config" in metadata else {}
    return {"state_dict": state, "metadata": metadata, "config": config}
