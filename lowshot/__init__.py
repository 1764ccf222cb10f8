"""lowshot-bench: the low-shot benchmark of self-supervised ViTs, under one import name.

`lowshot.model_zoo` (what a model is), `lowshot.tasks` (what a protocol is) and `lowshot.benchmark` (what a run is)
are the project's top-level folders `model_zoo/`, `tasks/` and `benchmark/`, installed under this package.
The names below are imported on first use, so `import lowshot` (and `lowshot --help`) stays fast.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {  # public name -> module that defines it
    "load_model": "lowshot.model_zoo.loading",
    "evaluate": "lowshot.benchmark.api",
    "LowShotProbe": "lowshot.benchmark.probe",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lowshot' has no attribute {name!r}")


def __dir__():
    return __all__
