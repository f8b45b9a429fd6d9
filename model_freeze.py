"""Freeze a trained Keras model into the GraphDef that CMSSW's TrackTfClassifier loads.

The contract (spec/CMSSW_INTERFACE.md): placeholders ``x`` float32 [N, 29] (raw features) and
``y`` float32 [N, 1] (originalAlgo as a float), output node ``Identity`` float32 [N, 1], the
sigmoid probability; no variables. Run alone on a finished run:

    python model_freeze.py results/<run>
"""

from __future__ import annotations

import argparse
import os
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

import network  # noqa: F401  (registers the custom layers for load_model)

OUTPUT_NODE = "Identity"
HOLDOUT_FILE = "holdout_tracks.npz"


@dataclass
class FreezeReport:
    path: Path
    nodes: int
    checked_tracks: int
    max_abs_difference: float


def freeze_model(
    model: keras.Model,
    path: Path,
    check_inputs: dict[str, np.ndarray],
    tolerance: float = 1e-5,
) -> FreezeReport:
    """Write the frozen graph to path, reload it and check it against the Keras model.

    Works on a model trained under any tf.distribute strategy: the weights are copied into a
    plain single-device clone first, so no distributed variable reaches the graph.
    """
    path = Path(path)
    n_features = check_inputs["x"].shape[1]
    plain = keras.models.clone_model(model)
    plain.set_weights(model.get_weights())

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, n_features], tf.float32, name="x"),
            tf.TensorSpec([None, 1], tf.float32, name="y"),
        ]
    )
    def serve(x, y):
        return plain({"x": x, "y": y}, training=False)

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    _name_output(graph_def, frozen.outputs[0].op.name)
    strip_default_attributes(graph_def)
    check_contract(graph_def, n_features)

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(graph_def.SerializeToString())
    try:
        reloaded = load_graph_def(tmp)
        frozen_scores = run_graph_def(reloaded, check_inputs)
        keras_scores = model.predict(check_inputs, batch_size=4096, verbose=0)
        difference = float(np.max(np.abs(frozen_scores - keras_scores), initial=0.0))
        if not difference <= tolerance:  # also catches NaN
            raise RuntimeError(
                f"The frozen graph disagrees with the Keras model: max |difference| = "
                f"{difference:.3g} > {tolerance:g} on {len(keras_scores)} tracks. {path} was "
                "not written."
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return FreezeReport(path, len(graph_def.node), len(keras_scores), difference)


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


def check_contract(graph_def: tf.compat.v1.GraphDef, n_features: int = 29) -> None:
    """Raise if the graph does not have CMSSW's inputs, output or is not frozen."""
    nodes = {node.name: node for node in graph_def.node}
    problems = []
    for name, width in (("x", n_features), ("y", 1)):
        node = nodes.get(name)
        if node is None or node.op != "Placeholder":
            problems.append(f"no placeholder '{name}'")
            continue
        dims = [d.size for d in node.attr["shape"].shape.dim]
        if node.attr["dtype"].type != tf.float32.as_datatype_enum or dims[-1:] != [width]:
            problems.append(f"placeholder '{name}' is not float32 [N, {width}] (shape {dims})")
    if OUTPUT_NODE not in nodes:
        problems.append(f"no output node '{OUTPUT_NODE}'")
    variables = [n.name for n in graph_def.node if "Variable" in n.op]
    if variables:
        problems.append(f"variables left in the graph: {variables[:3]}")
    if problems:
        raise RuntimeError("The frozen graph breaks CMSSW's contract: " + "; ".join(problems))


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
        return session.run(f"{OUTPUT_NODE}:0", feed_dict={"x:0": inputs["x"], "y:0": inputs["y"]})


def load_holdout(run_dir: Path) -> dict[str, np.ndarray]:
    """The held-out tracks the balance stage kept in the run folder, as the graph's inputs."""
    path = Path(run_dir) / HOLDOUT_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: it is written by the balance stage "
            "(python main.py --stage balance --run <run>)."
        )
    with np.load(path) as holdout:
        return {"x": holdout["x"], "y": holdout["y"]}


def freeze_run(run_dir: Path, tolerance: float = 1e-5) -> FreezeReport:
    """Freeze results/<run>/model.keras into results/<run>/frozen_graph.pb."""
    model_path = Path(run_dir) / "model.keras"
    if not model_path.exists():
        raise FileNotFoundError(
            f"{model_path} is missing: freeze a run whose training has finished "
            "(python main.py --stage train --run <run> trains it)."
        )
    check_inputs = load_holdout(run_dir)
    model = keras.models.load_model(model_path)
    return freeze_model(model, Path(run_dir) / "frozen_graph.pb", check_inputs, tolerance)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a run folder, e.g. results/latest")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args(argv)
    report = freeze_run(args.run, args.tolerance)
    print(
        f"Wrote {report.path} ({report.nodes} nodes); frozen graph and Keras model agree within "
        f"{report.max_abs_difference:.2g} on {report.checked_tracks} held-out tracks."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())


def verify_graph(
    path: Path, model: keras.Model, check_inputs: dict[str, np.ndarray], tolerance: float = 1e-5
) -> FreezeReport:
    """Check an existing frozen graph against the Keras model, as freeze_model checks a new one."""
    graph_def = load_graph_def(path)
    check_contract(graph_def, check_inputs["x"].shape[1])
    frozen_scores = run_graph_def(graph_def, check_inputs)
    keras_scores = model.predict(check_inputs, batch_size=4096, verbose=0)
    difference = float(np.max(np.abs(frozen_scores - keras_scores), initial=0.0))
    if not difference <= tolerance:
        raise RuntimeError(
            f"{path} disagrees with the run's Keras model: max |difference| = {difference:.3g} > "
            f"{tolerance:g} on {len(keras_scores)} tracks: the graph is not this run's."
        )
    return FreezeReport(Path(path), len(graph_def.node), len(keras_scores), difference)
