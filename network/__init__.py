"""The track-classification DNN, its in-graph preprocessing layers and its training.

The names below are loaded on first use (PEP 562), so that the TensorFlow-free parts
(network.inputs) can be imported without TensorFlow. Importing network.custom registers the
custom layers for keras.models.load_model.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "InputSanitizerLayer": "network.custom",
    "LinearScalingLayer": "network.custom",
    "OneHotLayer": "network.custom",
    "fit_linear_scaling": "network.custom",
    "fit_sanitizer_bounds": "network.custom",
    "transforms_for_features": "network.custom",
    "build_lwtnn_model": "network.model",
    "build_lwtnn_model_from_config": "network.model",
    "build_model": "network.model",
    "build_model_from_config": "network.model",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'network' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
