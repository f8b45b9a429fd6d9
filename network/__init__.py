"""The track-classification DNN and its in-graph preprocessing layers."""

from network.custom import (
    InputSanitizerLayer,
    OneHotLayer,
    fit_sanitizer_bounds,
    transforms_for_features,
)
from network.model import build_model, build_model_from_config

__all__ = [
    "InputSanitizerLayer",
    "OneHotLayer",
    "build_model",
    "build_model_from_config",
    "fit_sanitizer_bounds",
    "transforms_for_features",
]
