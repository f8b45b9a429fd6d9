"""Freeze a trained Keras model into the GraphDef that CMSSW's TrackTfClassifier loads.

The contract (cmssw.classifiers): placeholders ``x`` float32 [-1, 29] (the raw features in
CMSSW's order) and ``y`` float32 [-1, 1] (originalAlgo as a float), output node ``Identity``
float32 [-1, 1], the sigmoid probability; no variables. With deploy_target = "custom" the
widths are the model's own and no CMSSW classifier can load the graph. Run alone on a finished
run (also writes model.onnx and model_card.json beside the graph):

    python model_freeze.py results/<run>

What is frozen is an inference copy of the model: batch normalisation folded into the dense
kernels, then constant-mask selects and grappler's simplifications applied once to the frozen
graph (deploy.graph_optimize), so CMSSW's session runs fewer operations per track. The result
is checked against the Keras model itself, not against the copy.
"""

from __future__ import annotations

if __name__ == "__main__":  # before TensorFlow is imported: main.py's quiet console first
    import sys

    import main as _pipeline

    sys.exit(_pipeline.cli(["--stage", "freeze", "--run", *sys.argv[1:]]))

import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_registry
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

import network.custom  # noqa: F401  (registers the custom layers for load_model)
from cmssw.classifiers import (
    ALGO_INPUT,
    DEPLOY_TARGETS,
    FEATURE_INPUT,
    OUTPUT_NODE,
    TF_GRAPH_FEATURES,
    TF_GRAPH_INPUT_SHAPES,
    TF_GRAPH_OUTPUT_SHAPE,
)
from deploy.fold import fold_batch_norm
from deploy.graph_optimize import import_graph, optimize_graph_def
from pipeline.files import atomic_path
from pipeline.runs import HOLDOUT

GRAPH_FILE = "frozen_graph.pb"


@dataclass
class FreezeReport:
    path: Path
    nodes: int
    checked_tracks: int
    max_abs_difference: float
    deploy_target: str = "tf_graph"
    loadable_by: str | None = "TrackTfClassifier"  # the CMSSW module that can load it, or None
    note: str = ""  # one line for the summary: who can load the graph


def model_input_widths(model: keras.Model) -> dict[str, int]:
    """Width of each named input of the model, e.g. {"x": 29, "y": 1}."""
    return {tensor.name: int(tensor.shape[-1]) for tensor in model.inputs}


def expected_widths(deploy_target: str, model: keras.Model) -> dict[str, int]:
    """The widths of x and y the graph must have: CMSSW's for tf_graph, the model's for custom.

    Raises ValueError naming the mismatch when the model cannot be a TrackTfClassifier graph.
    """
    if deploy_target not in ("tf_graph", "custom"):
        raise ValueError(
            f"deploy_target {deploy_target!r} has no frozen graph: the graph is written for "
            f"'tf_graph' (TrackTfClassifier) and 'custom' only (lwtnn runs write "
            "lwtnn_network.json, deploy.lwtnn)"
        )
    widths = model_input_widths(model)
    if sorted(widths) != sorted((FEATURE_INPUT, ALGO_INPUT)):
        raise ValueError(
            f"the model's inputs are {sorted(widths)}, a frozen graph needs exactly "
            f"'{FEATURE_INPUT}' and '{ALGO_INPUT}' (network.build_model makes them)"
        )
    if deploy_target == "custom":
        return widths
    expected = {name: shape[1] for name, shape in TF_GRAPH_INPUT_SHAPES.items()}
    for name, width in expected.items():
        if widths[name] != width:
            raise ValueError(
                f"the model's input '{name}' has {widths[name]} columns, TrackTfClassifier "
                f"feeds {width}: train on the {len(TF_GRAPH_FEATURES)} inputs of "
                "cmssw.classifiers.TF_GRAPH_FEATURES, or set deploy_target = 'custom'"
            )
    return expected


def freeze_model(
    model: keras.Model,
    path: Path,
    check_inputs: dict[str, np.ndarray],
    tolerance: float = 1e-5,
    deploy_target: str = "tf_graph",
    optimize: bool = True,
) -> FreezeReport:
    """Write the frozen graph to path, reload it and check it against the Keras model.

    The contract is checked against cmssw.classifiers for deploy_target "tf_graph" and against
    the model's own input widths for "custom". Works on a model trained under any
    tf.distribute strategy: fold_batch_norm makes a plain single-device copy first, so no
    distributed variable reaches the graph. Nothing is written unless every check passes.
    optimize=False freezes the model layer by layer as it is, without folding batch
    normalisation or optimising the graph (a reference for benchmarks/bench_inference.py).
    """
    path = Path(path)
    widths = expected_widths(deploy_target, model)
    if optimize:
        plain = fold_batch_norm(model)
    else:
        plain = keras.models.clone_model(model)
        plain.set_weights(model.get_weights())

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, widths[FEATURE_INPUT]], tf.float32, name=FEATURE_INPUT),
            tf.TensorSpec([None, widths[ALGO_INPUT]], tf.float32, name=ALGO_INPUT),
        ]
    )
    def serve(x, y):
        return plain({FEATURE_INPUT: x, ALGO_INPUT: y}, training=False)

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    _name_output(graph_def, frozen.outputs[0].op.name)
    if optimize:
        graph_def = optimize_graph_def(graph_def, OUTPUT_NODE)
    strip_default_attributes(graph_def)
    check_contract(graph_def, widths[FEATURE_INPUT])

    with atomic_path(path) as tmp:  # written only once the reloaded graph agrees
        tmp.write_bytes(graph_def.SerializeToString())
        difference, checked = agreement(load_graph_def(tmp), model, check_inputs)
        consequence = f"{path} was not written."
        require_agreement(difference, tolerance, "The frozen graph", checked, consequence)
    return _report(path, graph_def, checked, difference, deploy_target, widths)


def agreement(
    graph_def: tf.compat.v1.GraphDef, model: keras.Model, check_inputs: dict[str, np.ndarray]
) -> tuple[float, int]:
    """(max |graph - Keras| over check_inputs, tracks checked)."""
    frozen_scores = run_graph_def(graph_def, check_inputs)
    keras_scores = model.predict(check_inputs, batch_size=4096, verbose=0)
    return float(np.max(np.abs(frozen_scores - keras_scores), initial=0.0)), len(keras_scores)


def require_agreement(
    difference: float, tolerance: float, what: str, tracks: int, consequence: str
) -> None:
    if not difference <= tolerance:  # also catches NaN
        raise RuntimeError(
            f"{what} disagrees with the Keras model: max |difference| = {difference:.3g} > "
            f"{tolerance:g} on {tracks} tracks. {consequence}"
        )


def verify_graph(
    path: Path,
    model: keras.Model,
    check_inputs: dict[str, np.ndarray],
    tolerance: float = 1e-5,
    deploy_target: str = "tf_graph",
) -> FreezeReport:
    """Check an existing frozen graph against the Keras model, as freeze_model checks a new one."""
    widths = expected_widths(deploy_target, model)
    graph_def = load_graph_def(path)
    check_contract(graph_def, widths[FEATURE_INPUT])
    difference, checked = agreement(graph_def, model, check_inputs)
    require_agreement(difference, tolerance, str(path), checked, "It is not this run's graph.")
    return _report(Path(path), graph_def, checked, difference, deploy_target, widths)


def _report(path, graph_def, checked, difference, deploy_target, widths) -> FreezeReport:
    loadable_by = DEPLOY_TARGETS[deploy_target]
    note = (
        f"loadable by CMSSW's {loadable_by}"
        if loadable_by
        else f"deploy_target = 'custom': x has {widths[FEATURE_INPUT]} columns; "
        f"TrackTfClassifier feeds {len(TF_GRAPH_FEATURES)} in its own order and cannot load "
        "this graph"
    )
    return FreezeReport(
        path, len(graph_def.node), checked, difference, deploy_target, loadable_by, note
    )


def _name_output(graph_def: tf.compat.v1.GraphDef, output: str) -> None:
    """Make the output node be called exactly ``Identity``, as CMSSW asks for it by name."""
    if output == OUTPUT_NODE:
        return
    for node in graph_def.node:
        if node.name == OUTPUT_NODE:
            node.name = f"{OUTPUT_NODE}_renamed"
            for other in graph_def.node:
                other.input[:] = [_renamed(i, OUTPUT_NODE, node.name) for i in other.input]
    identity = graph_def.node.add()
    identity.name, identity.op = OUTPUT_NODE, "Identity"
    identity.input.append(output)
    identity.attr["T"].type = tf.float32.as_datatype_enum


def _renamed(reference: str, old: str, new: str) -> str:
    prefix = "^" if reference.startswith("^") else ""
    name, _, port = reference.lstrip("^").partition(":")
    if name != old:
        return reference
    return prefix + new + (f":{port}" if port else "")


def strip_default_attributes(graph_def: tf.compat.v1.GraphDef) -> int:
    """Drop node attributes equal to their op's default value; return how many.

    An older TensorFlow runtime (the one CMSSW ships) rejects attributes its ops do not know
    yet; the ones newer releases add come with defaults, so dropping defaults keeps the graph
    loadable there and changes nothing here.
    """
    removed = 0
    for node in graph_def.node:
        op_def = op_def_registry.get(node.op)
        if op_def is None:
            continue
        for attr_def in op_def.attr:
            if (
                attr_def.HasField("default_value")
                and attr_def.name in node.attr
                and node.attr[attr_def.name] == attr_def.default_value
            ):
                del node.attr[attr_def.name]
                removed += 1
    return removed


def check_contract(
    graph_def: tf.compat.v1.GraphDef, n_features: int = len(TF_GRAPH_FEATURES)
) -> None:
    """Raise if the graph is not what TrackTfClassifier loads: placeholders x float32
    [-1, n_features] and y float32 [-1, 1] and no other, output Identity float32 [-1, 1], no
    variables. n_features is CMSSW's 29 unless a custom graph is checked."""
    nodes = {node.name: node for node in graph_def.node}
    problems = []
    float32 = tf.float32.as_datatype_enum
    expected = {
        FEATURE_INPUT: [-1, n_features],
        ALGO_INPUT: list(TF_GRAPH_INPUT_SHAPES[ALGO_INPUT]),
    }
    for name, shape in expected.items():
        node = nodes.get(name)
        if node is None or node.op != "Placeholder":
            problems.append(f"no placeholder '{name}'")
            continue
        dims = [d.size for d in node.attr["shape"].shape.dim]
        if node.attr["dtype"].type != float32 or dims != shape:
            problems.append(f"placeholder '{name}' is not float32 {shape} (shape {dims})")
    others = [n.name for n in graph_def.node if n.op == "Placeholder" and n.name not in expected]
    if others:
        problems.append(f"placeholders CMSSW does not feed: {others[:3]}")
    variables = [n.name for n in graph_def.node if "Variable" in n.op or n.op == "VarHandleOp"]
    if variables:
        problems.append(f"variables left in the graph: {variables[:3]}")
    if OUTPUT_NODE not in nodes:
        problems.append(f"no output node '{OUTPUT_NODE}'")
    elif not problems:
        problems += _output_problems(graph_def)
    if problems:
        raise RuntimeError("The frozen graph breaks CMSSW's contract: " + "; ".join(problems))


def _output_problems(graph_def: tf.compat.v1.GraphDef) -> list[str]:
    output = import_graph(graph_def).get_tensor_by_name(f"{OUTPUT_NODE}:0")
    shape = output.shape.as_list() if output.shape.rank is not None else None
    expected = [None if d == -1 else d for d in TF_GRAPH_OUTPUT_SHAPE]
    if output.dtype != tf.float32 or shape != expected:
        return [f"output '{OUTPUT_NODE}' is {output.dtype.name} {shape}, not float32 [-1, 1]"]
    return []


def load_graph_def(path: Path) -> tf.compat.v1.GraphDef:
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(Path(path).read_bytes())
    except Exception as error:  # protobuf's DecodeError
        raise RuntimeError(f"{path} is not a GraphDef: {error}") from error
    return graph_def


def run_graph_def(graph_def: tf.compat.v1.GraphDef, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Evaluate a frozen graph as CMSSW does: feed x and y, fetch Identity."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        feed = {f"{name}:0": inputs[name] for name in (FEATURE_INPUT, ALGO_INPUT)}
        return session.run(f"{OUTPUT_NODE}:0", feed_dict=feed)


def load_holdout(run_dir: Path) -> dict[str, np.ndarray]:
    """The held-out tracks the balance stage kept in the run folder, as the graph's inputs."""
    path = Path(run_dir) / HOLDOUT
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: it is written by the balance stage "
            "(python main.py --stage balance --run <run>)."
        )
    with np.load(path) as holdout:
        return {name: holdout[name] for name in ("x", "y") if name in holdout}  # lwtnn: no y


def main(argv: list[str] | None = None) -> int:
    """`python model_freeze.py results/<run> [--setting value ...]`: main.py's freeze stage on
    that run (its exports written, or checked if it has them, and its record kept)."""
    import main as pipeline

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        raise SystemExit("usage: python model_freeze.py results/<run> [--setting value ...]")
    return pipeline.main(["--stage", "freeze", "--run", *argv])
