"""numpy / torch conversions shared by the classifiers: numpy in -> numpy out, torch in -> torch out."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def resolve_device(device: Any, *arrays: Any) -> torch.device:
    """``device`` if given (checked), else the device of the first torch input, else CPU."""
    if device is None:
        for a in arrays:
            if isinstance(a, torch.Tensor):
                return a.device
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA requested but not available (torch.cuda.is_available() is False)")
    return device


def to_tensor(a: Any, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    if not isinstance(a, torch.Tensor):
        a = np.asarray(a)  # read-only memory maps of the feature cache are copied: torch must never write into them
        a = torch.as_tensor(a if a.flags.writeable else a.copy())
    return a.to(device=device, dtype=dtype if dtype is not None else a.dtype)


def to_numpy(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def like_input(out: torch.Tensor, like: Any) -> Any:
    """numpy in -> numpy out; torch in -> torch out on the input's device."""
    if isinstance(like, torch.Tensor):
        return out.to(like.device)
    return out.detach().cpu().numpy()


def check_2d(X: Any, name: str = "X") -> None:
    if len(X.shape) != 2:
        raise ValueError(f"{name} must be 2-D [n_samples, n_features], got shape {tuple(X.shape)}")
