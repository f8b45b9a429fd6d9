"""Custom Keras layers of the track DNN; importing this module registers them for loading."""

from network.custom.input_sanitizer import (
    TRANSFORMS,
    InputSanitizerLayer,
    fit_sanitizer_bounds,
    transforms_for_features,
)
from network.custom.linear_scaling import LinearScalingLayer, fit_linear_scaling
from network.custom.one_hot import ALGO_DEPTH, OneHotLayer

__all__ = [
    "ALGO_DEPTH",
    "TRANSFORMS",
    "InputSanitizerLayer",
    "LinearScalingLayer",
    "OneHotLayer",
    "fit_linear_scaling",
    "fit_sanitizer_bounds",
    "transforms_for_features",
]
