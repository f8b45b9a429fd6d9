"""lwtnn_network.json for CMSSW's TrackLwtnnClassifier, and lwtnn's forward pass in NumPy.

The file is lwtnn's sequential format, in the form of the production
LWTNN_network_10_5_X_v1.json: ``inputs`` (per input its name, offset and scale: the network
sees (value + offset) * scale), ``layers`` (dense layers: activation, weights = the Keras kernel
[n_in, n_out] transposed and flattened row by row, i.e. all the weights of output 0 first, and
bias), ``nodes`` (the same chain in lwtnn's graph notation, which the sequential parser
ignores) and ``outputs`` (["out_0"]). CMSSW fills the inputs by name.

LwtnnNetwork reads such a file and computes what lwtnn computes, in double precision like
lwtnn, with NumPy only. It checks an export before it is written, scores the test samples in
the evaluation, and reads the production file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cmssw.classifiers import LWTNN_ACTIVATIONS, LWTNN_OUTPUT
from deploy.fold import fold_batch_norm
from model_freeze import require_agreement
from network.custom.linear_scaling import LinearScalingLayer
from pipeline.files import write_atomically

LWTNN_FILE = "lwtnn_network.json"


# --- lwtnn's forward pass ------------------------------------------------------------------------
def _sigmoid(z: np.ndarray) -> np.ndarray:
    # lwtnn returns exactly 0 below -30 and 1 above 30 (no overflow in exp); NaN stays NaN.
    with np.errstate(over="ignore"):
        p = 1.0 / (1.0 + np.exp(-z))
    return np.where(z < -30.0, 0.0, np.where(z > 30.0, 1.0, p))


def _elu(z: np.ndarray, alpha: float) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(z >= 0, z, alpha * np.expm1(np.minimum(z, 0.0)))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - np.max(z, axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# lwtnn's activation name -> f(z, alpha). "rectified" keeps NaN (z < 0 is false for NaN).
_ACTIVATIONS = {
    "linear": lambda z, a: z,
    "rectified": lambda z, a: np.where(z < 0, 0.0, z),
    "sigmoid": lambda z, a: _sigmoid(z),
    "tanh": lambda z, a: np.tanh(z),
    "elu": lambda z, a: _elu(z, 1.0 if a is None else a),
    "softmax": lambda z, a: _softmax(z),
    "hard_sigmoid": lambda z, a: np.clip(0.2 * z + 0.5, 0.0, 1.0),
    "abs": lambda z, a: np.abs(z),
    "leakyrelu": lambda z, a: np.where(z > 0, z, a * z),
    "swish": lambda z, a: z * _sigmoid(a * z),
}
_NEED_ALPHA = {"leakyrelu", "swish"}


def _activation(spec: Any, where: str) -> tuple[str, float | None]:
    """(name, alpha) of an lwtnn activation, given as a name or {"function", "alpha"}."""
    name, alpha = (
        (spec.get("function"), spec.get("alpha")) if isinstance(spec, dict) else (spec, None)
    )
    if name not in _ACTIVATIONS:
        raise ValueError(f"{where}: activation {spec!r} is not one lwtnn computes")
    if name in _NEED_ALPHA and alpha is None:
        raise ValueError(f"{where}: activation {name!r} needs {{'function', 'alpha'}}")
    return name, None if alpha is None else float(alpha)


@dataclass
class LwtnnLayer:
    weights: np.ndarray  # [n_out, n_in], as lwtnn builds its matrix
    bias: np.ndarray  # [n_out]
    activation: str
    alpha: float | None = None


class LwtnnNetwork:
    """A sequential lwtnn network read from its JSON, evaluated with NumPy in float64."""

    def __init__(self, config: Mapping[str, Any], source: str = "lwtnn network") -> None:
        for key in ("inputs", "layers", "outputs"):
            if key not in config:
                raise ValueError(f"{source}: no '{key}' (not lwtnn's sequential format)")
        self.source = source
        self.input_names = [entry["name"] for entry in config["inputs"]]
        self.offsets = np.array([float(e["offset"]) for e in config["inputs"]])
        self.scales = np.array([float(e["scale"]) for e in config["inputs"]])
        self.output_names = list(config["outputs"])
        self.layers: list[LwtnnLayer] = []
        width = len(self.input_names)
        for i, layer in enumerate(config["layers"]):
            where = f"{source}, layer {i}"
            if layer.get("architecture") != "dense":
                raise ValueError(
                    f"{where}: architecture {layer.get('architecture')!r} is not dense"
                )
            weights = np.asarray(layer["weights"], dtype=np.float64)
            bias = np.asarray(layer["bias"], dtype=np.float64)
            if width == 0 or weights.size % width or weights.size // width != bias.size:
                raise ValueError(
                    f"{where}: {weights.size} weights and {bias.size} biases do not fit "
                    f"{width} inputs"
                )
            name, alpha = _activation(layer.get("activation", "linear"), where)
            self.layers.append(LwtnnLayer(weights.reshape(bias.size, width), bias, name, alpha))
            width = bias.size
        if width != len(self.output_names):
            raise ValueError(
                f"{source}: the last layer has {width} outputs but 'outputs' names "
                f"{len(self.output_names)}"
            )

    @classmethod
    def from_json(cls, path: str | Path) -> LwtnnNetwork:
        path = Path(path)
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a readable lwtnn JSON file ({error})") from error
        return cls(config, str(path))

    def input_matrix(self, inputs: Mapping[str, Any]) -> np.ndarray:
        """[N, n_inputs] float64 in the network's order, from columns named like its inputs
        (a DataFrame or a dict of arrays), as CMSSW fills them by name."""
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise KeyError(
                f"{self.source} needs inputs {missing}, which the tracks do not have (derived "
                "inputs such as trk_dzClosestPVNorm come from cmssw.classifiers.DERIVED_INPUTS)"
            )
        return np.column_stack(
            [np.asarray(inputs[name], dtype=np.float64) for name in self.input_names]
        )

    def compute_matrix(self, x: np.ndarray) -> np.ndarray:
        """Outputs [N, n_outputs] for inputs [N, n_inputs] in the network's order."""
        h = (np.asarray(x, dtype=np.float64) + self.offsets) * self.scales
        with np.errstate(invalid="ignore", over="ignore"):
            for layer in self.layers:
                h = _ACTIVATIONS[layer.activation](h @ layer.weights.T + layer.bias, layer.alpha)
        return h

    def compute(self, inputs: Mapping[str, Any]) -> np.ndarray:
        """Outputs [N, n_outputs] for tracks given by input name."""
        return self.compute_matrix(self.input_matrix(inputs))


def lwtnn_scores(path: str | Path, tracks: Mapping[str, Any]) -> np.ndarray:
    """p (the first output) per track of an lwtnn JSON, for the evaluation.

    A track with a non-finite input gets NaN, as in CMSSW, where its mva = 2p - 1 then passes
    no cut: count it as rejected (e.g. np.nan_to_num(p, nan=0.0)).
    """
    return LwtnnNetwork.from_json(path).compute(tracks)[:, 0]


# --- the Keras model in lwtnn's terms ---------------------------------------------------------
def _activation_name(function, layer: keras.layers.Layer) -> str:
    name = keras.activations.serialize(function)
    name = name if isinstance(name, str) else str(name)
    if name not in LWTNN_ACTIVATIONS:
        raise ValueError(
            f"layer '{layer.name}': activation {name!r} has no lwtnn equivalent; use one of "
            f"{', '.join(LWTNN_ACTIVATIONS)}"
        )
    return name


def _chain(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers, checked to form one chain from one input."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "an lwtnn network has one input vector and one output: build the model with "
            "network.build_lwtnn_model"
        )
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    for previous, layer in zip(layers, layers[1:], strict=False):
        if layer.input._keras_history.operation is not previous:
            raise ValueError(f"layer '{layer.name}' does not follow '{previous.name}' in a chain")
    return layers


def lwtnn_config(model: keras.Model, features: Sequence[str]) -> dict[str, Any]:
    """The lwtnn JSON content of an lwtnn-variant Keras model (network.build_lwtnn_model):
    batch normalisation folded, dropout dropped; anything lwtnn cannot express is refused."""
    layers = _chain(fold_batch_norm(model))
    if not layers or not isinstance(layers[0], LinearScalingLayer):
        raise ValueError(
            "the model does not start with LinearScalingLayer: lwtnn applies (x + offset) * "
            "scale and nothing else; build it with network.build_lwtnn_model"
        )
    offset = keras.ops.convert_to_numpy(layers[0].offset).astype(np.float64)
    scale = keras.ops.convert_to_numpy(layers[0].scale).astype(np.float64)
    if len(features) != offset.size:
        raise ValueError(f"{len(features)} feature names for a model with {offset.size} inputs")
    dense: list[dict[str, Any]] = []
    for layer in layers[1:]:
        if isinstance(layer, keras.layers.Dense):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            bias = keras.ops.convert_to_numpy(layer.bias) if layer.use_bias else 0 * kernel[0]
            dense.append(
                {
                    "activation": _activation_name(layer.activation, layer),
                    "architecture": "dense",
                    "bias": np.asarray(bias, np.float64).tolist(),
                    "weights": np.asarray(kernel, np.float64).T.ravel().tolist(),
                }
            )
        elif (
            isinstance(layer, keras.layers.Activation)
            and dense
            and dense[-1]["activation"] == "linear"
        ):
            dense[-1]["activation"] = _activation_name(layer.activation, layer)
        else:
            raise ValueError(
                f"layer '{layer.name}' ({layer.__class__.__name__}) has no lwtnn equivalent: "
                "lwtnn takes dense layers, each with one activation"
            )
    for entry in dense:
        entry["activation"] = LWTNN_ACTIVATIONS[entry["activation"]]
    n = len(dense)
    return {
        "inputs": [
            {"name": name, "offset": float(o), "scale": float(s)}
            for name, o, s in zip(features, offset, scale, strict=True)
        ],
        "layers": dense,
        # lwtnn's graph notation of the same chain, input node last (as the production file)
        "nodes": [
            {"layer_index": i, "sources": [i - 1 if i else n], "type": "feed_forward"}
            for i in range(n)
        ]
        + [{"size": len(features), "sources": [0], "type": "input"}],
        "outputs": [LWTNN_OUTPUT],
    }


def keras_model_from_lwtnn(network: LwtnnNetwork) -> keras.Model:
    """A Keras model computing the same as an lwtnn network (float32), built from its weights."""
    to_keras = {lwtnn: keras_name for keras_name, lwtnn in LWTNN_ACTIVATIONS.items()}
    x = keras.Input(shape=(len(network.input_names),), name="x")
    h = LinearScalingLayer(network.offsets, network.scales, name="linear_scaling")(x)
    for i, layer in enumerate(network.layers):
        if layer.activation not in to_keras or layer.alpha not in (None, 1.0):
            raise ValueError(f"layer {i}: no Keras twin for lwtnn's {layer.activation!r}")
        dense = keras.layers.Dense(
            layer.bias.size, activation=to_keras[layer.activation], name=f"dense_{i}"
        )
        h = dense(h)
        dense.set_weights([layer.weights.T.astype(np.float32), layer.bias.astype(np.float32)])
    return keras.Model(inputs={"x": x}, outputs=h, name="from_lwtnn")


# --- the export --------------------------------------------------------------------------------
@dataclass
class LwtnnReport:
    path: Path
    checked_tracks: int
    max_abs_difference: float
    non_finite_tracks: int  # check tracks with a non-finite input: NaN from both, as in CMSSW


def compare_scores(reference: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    """(max |difference| where both are numbers, tracks where either is NaN); inf if they
    disagree on which tracks give NaN."""
    reference, scores = np.ravel(reference), np.ravel(scores)
    nan_reference, nan_scores = np.isnan(reference), np.isnan(scores)
    if not np.array_equal(nan_reference, nan_scores):
        return float("inf"), int(np.sum(nan_reference | nan_scores))
    both = ~nan_reference
    difference = np.max(np.abs(reference[both] - scores[both]), initial=0.0)
    return float(difference), int(np.sum(nan_reference))


def export_lwtnn(
    model: keras.Model,
    path: Path,
    features: Sequence[str],
    check_x: np.ndarray,
    tolerance: float = 1e-5,
) -> LwtnnReport:
    """Write lwtnn_network.json for the lwtnn-variant model, after checking that lwtnn's
    forward pass on the file (LwtnnNetwork) reproduces the Keras model within tolerance on
    check_x ([N, len(features)] held-out tracks, features' order). Otherwise nothing is
    written."""
    path = Path(path)
    text = json.dumps(lwtnn_config(model, features), indent=1)
    report = _checked(LwtnnNetwork(json.loads(text), str(path)), model, path, check_x)
    require_agreement(
        report.max_abs_difference,
        tolerance,
        f"lwtnn's forward pass on {path.name}",
        report.checked_tracks,
        f"{path} was not written.",
    )
    write_atomically(path, text)
    return report


def check_lwtnn(
    model: keras.Model, path: Path, check_x: np.ndarray, tolerance: float = 1e-5
) -> LwtnnReport:
    """Check an existing lwtnn_network.json against the Keras model, as export_lwtnn checks a
    new one."""
    report = _checked(LwtnnNetwork.from_json(path), model, Path(path), check_x)
    require_agreement(
        report.max_abs_difference, tolerance, str(path), report.checked_tracks,
        "It is not this run's network.",
    )  # fmt: skip
    return report


def _checked(network: LwtnnNetwork, model: keras.Model, path: Path, check_x) -> LwtnnReport:
    check_x = np.asarray(check_x, dtype=np.float32)
    scores = network.compute_matrix(check_x)
    keras_scores = model.predict({"x": check_x}, batch_size=4096, verbose=0)
    difference, non_finite = compare_scores(keras_scores, scores)
    return LwtnnReport(path, len(check_x), difference, non_finite)
