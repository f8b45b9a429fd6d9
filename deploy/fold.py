"""An inference copy of a Keras model with batch normalisation folded into the dense kernels.

At inference a BatchNormalization layer is a fixed per-unit affine map, so after a Dense layer
with a linear activation it can be absorbed into that layer's kernel and bias:

    s  = gamma / sqrt(moving_variance + epsilon)
    W' = W * s          (each output column scaled)
    b' = (b - moving_mean) * s + beta

The copy computes the same function with fewer operations (a frozen graph is cheaper per
track, and lwtnn, which has no batch-norm layer, can express it). Dropout layers, the identity
at inference, are left out. The copy lives on one device, whatever strategy trained the model.
"""

from __future__ import annotations

import keras
import numpy as np


def _producer(tensor) -> keras.layers.Layer:
    return tensor._keras_history.operation


def _foldable(model: keras.Model) -> dict[str, keras.layers.BatchNormalization]:
    """Dense layer name -> the BatchNormalization layer that folds into it.

    Only the plain pattern folds: a Dense layer with a linear activation called once, whose
    one output feeds one BatchNormalization layer (called once) normalising the last axis.
    """
    folds = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        axis = layer.axis if isinstance(layer.axis, int) else None
        if len(layer._inbound_nodes) != 1 or axis not in (-1, len(layer.input.shape) - 1):
            continue
        dense = _producer(layer.input)
        if (
            isinstance(dense, keras.layers.Dense)
            and keras.activations.serialize(dense.activation) == "linear"
            and len(dense._inbound_nodes) == 1
            and len(dense._outbound_nodes) == 1
        ):
            folds[dense.name] = layer
    return folds


def folded_dense_weights(
    dense: keras.layers.Dense, norm: keras.layers.BatchNormalization
) -> tuple[np.ndarray, np.ndarray]:
    """The kernel and bias of `dense` followed by `norm` at inference, as one Dense layer."""
    kernel = keras.ops.convert_to_numpy(dense.kernel).astype(np.float64)
    units = kernel.shape[-1]
    bias = (
        keras.ops.convert_to_numpy(dense.bias).astype(np.float64)
        if dense.use_bias
        else np.zeros(units)
    )

    def value(weight, default: float) -> np.ndarray:
        if weight is None:
            return np.full(units, default)
        return keras.ops.convert_to_numpy(weight).astype(np.float64)

    gamma = value(norm.gamma if norm.scale else None, 1.0)
    beta = value(norm.beta if norm.center else None, 0.0)
    mean = value(norm.moving_mean, 0.0)
    variance = value(norm.moving_variance, 1.0)
    s = gamma / np.sqrt(variance + norm.epsilon)
    return (kernel * s).astype(np.float32), ((bias - mean) * s + beta).astype(np.float32)


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """A single-device copy of a functional `model` for inference: batch normalisation folded
    into the preceding Dense layers, Dropout left out, every other layer and weight as is."""
    folds = _foldable(model)
    folded_norms = {norm.name for norm in folds.values()}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer.name in folds:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call(layer: keras.layers.Layer, *args, **kwargs):
        if layer.name in folded_norms or isinstance(layer, keras.layers.Dropout):
            return args[0]
        return layer(*args, **kwargs)

    copy = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in copy.layers:
        if not layer.weights:
            continue
        original = model.get_layer(layer.name)
        if layer.name in folds:
            layer.set_weights(list(folded_dense_weights(original, folds[layer.name])))
        else:
            layer.set_weights(original.get_weights())
    return copy
