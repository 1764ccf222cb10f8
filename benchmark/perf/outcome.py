"""What each item of `gpu_check` ends with: a status, the reason when it did not pass, its figures, its time."""
from __future__ import annotations

import time
import traceback

import torch

from lowshot.model_zoo.errors import one_line

NO_GPU = "no GPU"


def passed(ok: bool, why_not: str, **details) -> dict:
    """A check: passed, or failed with `why_not`."""
    return {"status": "passed", **details} if ok else {"status": "failed", "reason": why_not, **details}


def measured(**figures) -> dict:
    return {"status": "measured", **figures}


def skipped(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


def run_item(fn, *args) -> dict:
    """`fn(*args)`'s outcome with its wall time; an exception is a failed item (its message and the line that raised
    it), so that one broken path never costs the rest of a GPU session."""
    t0 = time.perf_counter()
    try:
        out = fn(*args)
    except Exception as e:  # noqa: BLE001 -- reported, never hidden
        frame = traceback.extract_tb(e.__traceback__)[-1]
        out = {"status": "failed", "reason": f"{type(e).__name__}: {one_line(e)} ({frame.filename}:{frame.lineno})"}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {**out, "seconds": round(time.perf_counter() - t0, 3)}


def on_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"
