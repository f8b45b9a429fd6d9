"""The track-classification DNN and its in-graph preprocessing layers."""

from network.custom import (
    InputSanitizerLayer,
    LinearScalingLayer,
    OneHotLayer,
    fit_linear_scaling,
    fit_sanitizer_bounds,
    transforms_for_features,
)
from network.model import (
    build_lwtnn_model,
    build_lwtnn_model_from_config,
    build_model,
    build_model_from_config,
)

__all__ = [
    "InputSanitizerLayer",
    "LinearScalingLayer",
    "OneHotLayer",
    "build_lwtnn_model",
    "build_lwtnn_model_from_config",
    "build_model",
    "build_model_from_config",
    "fit_linear_scaling",
    "fit_sanitizer_bounds",
    "transforms_for_features",
]
