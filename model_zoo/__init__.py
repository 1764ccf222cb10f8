"""Model zoo: registry of releases, download + cache, safe loading, format filters, one feature interface."""
from .extractor import FEATURES, FeatureExtractor, ModelInfo
from .loading import load_model
from .registry import METHODS, REGISTRY, EvalConfig, ModelEntry, get_entry
from .transforms import TransformSpec

__all__ = ["FEATURES", "FeatureExtractor", "ModelInfo", "load_model", "METHODS", "REGISTRY", "EvalConfig",
           "ModelEntry", "get_entry", "TransformSpec"]
