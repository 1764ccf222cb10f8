"""Model zoo: registry of releases, download + cache, safe loading, format filters, one feature interface."""
from .extractor import FEATURES, FeatureExtractor, ModelInfo, load_model
from .registry import METHODS, REGISTRY, ModelEntry, get_entry

__all__ = ["FEATURES", "FeatureExtractor", "ModelInfo", "load_model", "METHODS", "REGISTRY", "ModelEntry", "get_entry"]
