"""The track-classification DNN: the graph CMSSW's TrackTfClassifier loads once frozen.

Inputs "x" (raw features, float32 [N, n_features]) and "y" (originalAlgo as float32 [N, 1]);
all preprocessing is inside: sanitizer(x) ‖ one_hot(y) -> dense blocks -> sigmoid "output".

The lwtnn variant (build_lwtnn_model, for CMSSW's TrackLwtnnClassifier) has one input "x", the
22 lwtnn inputs with trk_algo among them as a raw number, and only what lwtnn can compute:
(x + offset) * scale -> the same dense blocks with an lwtnn activation -> sigmoid "output".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from cmssw.classifiers import LWTNN_ACTIVATIONS
from network.custom.input_sanitizer import InputSanitizerLayer, transforms_for_features
from network.custom.linear_scaling import LinearScalingLayer
from network.custom.one_hot import ALGO_DEPTH, OneHotLayer

DEFAULT_HIDDEN_LAYERS = (128, 128, 64, 64, 32)


def _check_settings(
    features: Sequence[str],
    algo_depth: int,
    hidden_layers: Sequence[int],
    activation: str,
    batch_norm: bool,
    dropout: float,
    l2: float,
    initializer: str,
) -> None:
    """The rules of the settings (pipeline.checks), for a call from outside the pipeline."""
    from pipeline.checks import check_model_settings

    if isinstance(features, str) or not features:
        raise ValueError(f"`features` must be a non-empty list of names, got {features!r}")
    duplicates = sorted({f for f in features if list(features).count(f) > 1})
    if duplicates:
        raise ValueError(f"`features` lists some names more than once: {duplicates}")
    check_model_settings(
        {
            "algo_depth": algo_depth,
            "hidden_layers": hidden_layers,
            "activation": activation,
            "batch_norm": batch_norm,
            "dropout": dropout,
            "l2": l2,
            "initializer": initializer,
        }
    )


def _seeded_initializer(name: str, seed: int) -> keras.initializers.Initializer:
    # A fresh instance per layer with its own seed: reproducible, and not the same draw twice.
    initializer = keras.initializers.get(name)
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = seed
        initializer = initializer.__class__.from_config(config)
    return initializer


def build_model(
    features: Sequence[str],
    feature_transforms: Mapping[str, str],
    lower: np.ndarray,
    upper: np.ndarray,
    algo_depth: int = ALGO_DEPTH,
    hidden_layers: Sequence[int] = DEFAULT_HIDDEN_LAYERS,
    activation: str = "elu",
    batch_norm: bool = True,
    dropout: float = 0.1,
    l2: float = 1e-5,
    initializer: str = "he_normal",
    seed: int = 42,
) -> keras.Model:
    """Functional model with inputs "x" [N, len(features)] and "y" [N, 1] (both float32) and
    one sigmoid output "output" [N, 1].

    `feature_transforms` maps feature name -> transform (others get "none"); `lower`/`upper`
    are the sanitizer bounds per feature, in the order of `features` (fit_sanitizer_bounds).
    Each hidden block is Dense (no bias when followed by BatchNorm) -> BatchNorm -> activation
    -> Dropout, with L2 on the kernels.
    """
    _check_settings(
        features, algo_depth, hidden_layers, activation, batch_norm, dropout, l2, initializer
    )
    transforms = transforms_for_features(features, feature_transforms)
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None

    x = keras.Input(shape=(len(features),), dtype="float32", name="x")
    y = keras.Input(shape=(1,), dtype="float32", name="y")
    sanitized = InputSanitizerLayer(transforms, lower, upper, name="input_sanitizer")(x)
    algo = OneHotLayer(algo_depth, name="algo_one_hot")(y)
    h = keras.layers.Concatenate(name="concatenate")([sanitized, algo])

    output = _dense_blocks(
        h, hidden_layers, activation, batch_norm, dropout, regularizer, initializer, seed
    )
    return keras.Model(inputs=[x, y], outputs=output, name="track_dnn")


def _dense_blocks(
    h,
    hidden_layers: Sequence[int],
    activation: str,
    batch_norm: bool,
    dropout: float,
    regularizer: keras.regularizers.Regularizer | None,
    initializer: str,
    seed: int,
):
    """The hidden blocks and the sigmoid output layer "output", on top of tensor h."""
    for i, width in enumerate(hidden_layers):
        h = keras.layers.Dense(
            int(width),
            use_bias=not batch_norm,  # BatchNorm's beta already is the bias
            kernel_initializer=_seeded_initializer(initializer, seed + i),
            kernel_regularizer=regularizer,
            name=f"dense_{i}",
        )(h)
        if batch_norm:
            # Synchronized: under a multi-device strategy the batch statistics are those of the
            # global batch and every replica keeps the same moving averages.
            h = keras.layers.BatchNormalization(synchronized=True, name=f"batch_norm_{i}")(h)
        h = keras.layers.Activation(activation, name=f"activation_{i}")(h)
        if dropout > 0:
            h = keras.layers.Dropout(dropout, seed=seed + i, name=f"dropout_{i}")(h)

    return keras.layers.Dense(
        1,
        activation="sigmoid",
        kernel_initializer=_seeded_initializer("glorot_uniform", seed + len(hidden_layers)),
        kernel_regularizer=regularizer,
        name="output",
    )(h)


def build_lwtnn_model(
    features: Sequence[str],
    offset: np.ndarray,
    scale: np.ndarray,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    hidden_layers: Sequence[int] = DEFAULT_HIDDEN_LAYERS,
    activation: str = "elu",
    batch_norm: bool = True,
    dropout: float = 0.1,
    l2: float = 1e-5,
    initializer: str = "he_normal",
    seed: int = 42,
) -> keras.Model:
    """The lwtnn variant: input {"x": float32 [N, len(features)]} (all inputs, trk_algo raw),
    LinearScalingLayer(offset, scale, lower, upper) (from fit_linear_scaling; lower/upper
    clip in training only), the dense blocks of build_model, sigmoid output "output". Batch
    normalisation is allowed: the export folds it.

    `activation` must be one lwtnn computes (cmssw.classifiers.LWTNN_ACTIVATIONS); checked
    here, before any training.
    """
    _check_settings(features, 1, hidden_layers, activation, batch_norm, dropout, l2, initializer)
    if activation not in LWTNN_ACTIVATIONS:
        raise ValueError(
            f"`activation` {activation!r} has no lwtnn equivalent (deploy_target = 'lwtnn'): "
            f"use one of {', '.join(LWTNN_ACTIVATIONS)}"
        )
    if np.shape(offset) != (len(features),) or np.shape(scale) != (len(features),):
        raise ValueError(
            f"offset and scale need one value per feature ({len(features)}), got shapes "
            f"{np.shape(offset)} and {np.shape(scale)}"
        )
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    x = keras.Input(shape=(len(features),), dtype="float32", name="x")
    h = LinearScalingLayer(offset, scale, lower, upper, name="linear_scaling")(x)
    output = _dense_blocks(
        h, hidden_layers, activation, batch_norm, dropout, regularizer, initializer, seed
    )
    return keras.Model(inputs={"x": x}, outputs=output, name="track_dnn_lwtnn")


def build_lwtnn_model_from_config(
    cfg: Mapping[str, Any],
    offset: np.ndarray,
    scale: np.ndarray,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
) -> keras.Model:
    """build_lwtnn_model with the model settings of a config.py-like dict."""
    if "features" not in cfg:
        raise KeyError("the settings have no `features`")
    settings = _model_settings(cfg, with_algo_depth=False)
    return build_lwtnn_model(list(cfg["features"]), offset, scale, lower, upper, **settings)


def _model_settings(cfg: Mapping[str, Any], with_algo_depth: bool = True) -> dict[str, Any]:
    keys = ("hidden_layers", "activation", "batch_norm", "dropout", "l2", "initializer", "seed")
    keys = (("algo_depth",) if with_algo_depth else ()) + keys
    return {key: cfg[key] for key in keys if key in cfg}


def build_model_from_config(
    cfg: Mapping[str, Any], lower: np.ndarray, upper: np.ndarray
) -> keras.Model:
    """build_model with the settings of a config.py-like dict (`features` is required; the
    model settings missing from `cfg` take build_model's defaults)."""
    if "features" not in cfg:
        raise KeyError("the settings have no `features`")
    settings = _model_settings(cfg)
    return build_model(
        list(cfg["features"]), dict(cfg.get("feature_transforms", {})), lower, upper, **settings
    )
