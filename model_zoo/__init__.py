"""Model zoo: registry of releases, download + cache, safe loading, format filters, one feature interface.

The names below are imported on first use (PEP 562), so that reading the registry (`lowshot models`, the CLI's
help) imports neither torch nor timm.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "FEATURES": "lowshot.model_zoo.registry", "METHODS": "lowshot.model_zoo.registry",
    "REGISTRY": "lowshot.model_zoo.registry", "EvalConfig": "lowshot.model_zoo.registry",
    "ModelEntry": "lowshot.model_zoo.registry", "get_entry": "lowshot.model_zoo.registry",
    "FeatureExtractor": "lowshot.model_zoo.extractor", "ModelInfo": "lowshot.model_zoo.extractor",
    "load_model": "lowshot.model_zoo.loading", "TransformSpec": "lowshot.model_zoo.transforms",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lowshot.model_zoo' has no attribute {name!r}")


def __dir__():
    return __all__
