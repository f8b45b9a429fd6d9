"""model.onnx: the frozen graph converted by tf2onnx, for CMSSW's ONNX Runtime and other tools.

The input is the frozen graph itself (what TrackTfClassifier runs), so both files compute the
same function: inputs ``x`` float32 [N, n_features] and ``y`` float32 [N, 1] with a dynamic
batch dimension N, output ``Identity`` float32 [N, 1]. Opset and IR version are the newest the
oldest ONNX Runtime in CMSSW reads (cmssw.classifiers.ONNX_MAX_OPSET / ONNX_MAX_IR_VERSION).

tf2onnx's default rules change the in-graph preprocessing in three places, so three ops get
rules of their own here (tf2onnx's custom-op-handler mechanism):

- Log1p has no ONNX op: log(1 + x), which differs from log1p by < 1e-7 at float32 precision;
- Select/SelectV2 become cond * a + (1 - cond) * b by default, which turns the sanitizer's
  ±inf and NaN branches into NaN (0 * inf): here they become ONNX Where, exact;
- OneHot: TensorFlow gives an all-zero row for index -1 (the one-hot layer's "out of range"),
  ONNX counts negative indices from the end; negative indices are sent to depth (all zero).

The model is written only after ONNX Runtime has reproduced the Keras model on the check tracks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime
import tensorflow as tf
import tf2onnx
from tf2onnx import utils as tf2onnx_utils
from tf2onnx.onnx_opset.controlflow import Select
from tf2onnx.onnx_opset.tensor import OneHot

from cmssw.classifiers import (
    ALGO_INPUT,
    FEATURE_INPUT,
    ONNX_MAX_IR_VERSION,
    ONNX_MAX_OPSET,
    OUTPUT_NODE,
)
from model_freeze import require_agreement
from pipeline.files import write_atomically

ONNX_FILE = "model.onnx"
BATCH_DIMENSION = "N"


@dataclass
class OnnxReport:
    path: Path
    opset: int
    ir_version: int
    checked_tracks: int
    max_abs_difference: float


def _log1p_as_log(ctx, node, name, args) -> None:
    dtype = tf2onnx_utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(tf2onnx_utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    shifted = ctx.make_node("Add", [node.input[0], one.output[0]], op_name_scope=name)
    ctx.replace_inputs(node, [shifted.output[0]])
    node.type = "Log"


def _select_as_where(ctx, node, name, args) -> None:
    node.set_attr("handles_nan", True)  # tf2onnx's own switch to its exact Where rule
    Select.version_9(ctx, node)


def _one_hot_negative_out_of_range(ctx, node, name, args) -> None:
    index = node.input[0]
    dtype = tf2onnx_utils.map_onnx_to_numpy_type(ctx.get_dtype(index))
    depth = node.inputs[1].get_tensor_value()
    zero = ctx.make_const(tf2onnx_utils.make_name(f"{name}_zero"), np.array(0, dtype=dtype))
    beyond = ctx.make_const(tf2onnx_utils.make_name(f"{name}_depth"), np.array(depth, dtype=dtype))
    negative = ctx.make_node("Less", [index, zero.output[0]], op_name_scope=name)
    moved = ctx.make_node(
        "Where", [negative.output[0], beyond.output[0], index], op_name_scope=name
    )
    ctx.replace_input(node, index, moved.output[0], 0)
    OneHot.any_version_after9(ctx.opset, ctx, node)


OP_HANDLERS = {
    "Log1p": (_log1p_as_log, []),
    "Select": (_select_as_where, []),
    "SelectV2": (_select_as_where, []),
    "OneHot": (_one_hot_negative_out_of_range, []),
}


def convert_graph_def(graph_def: tf.compat.v1.GraphDef, opset: int = ONNX_MAX_OPSET):
    """The frozen graph as an onnx.ModelProto with inputs x, y and output Identity."""
    names = [FEATURE_INPUT, ALGO_INPUT, OUTPUT_NODE]
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    model, _ = tf2onnx.convert.from_graph_def(
        graph_def,
        name="track_dnn",
        input_names=[f"{FEATURE_INPUT}:0", f"{ALGO_INPUT}:0"],
        output_names=[f"{OUTPUT_NODE}:0"],
        opset=opset,
        custom_op_handlers=OP_HANDLERS,
        tensors_to_rename={f"{name}:0": name for name in names},
    )
    used = {node.domain for node in model.graph.node} | {""}
    kept = [entry for entry in model.opset_import if entry.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIMENSION
    return model


def check_onnx_contract(model, n_features: int) -> None:
    """Raise unless the model is valid ONNX with CMSSW-readable versions and the interface."""
    problems = []
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        problems.append(f"invalid ONNX: {str(error).splitlines()[0]}")
    opset = max(e.version for e in model.opset_import if e.domain in ("", "ai.onnx"))
    if opset > ONNX_MAX_OPSET or model.ir_version > ONNX_MAX_IR_VERSION:
        problems.append(
            f"opset {opset} / IR version {model.ir_version}: CMSSW's oldest ONNX Runtime "
            f"reads up to opset {ONNX_MAX_OPSET} / IR {ONNX_MAX_IR_VERSION}"
        )
    float32 = onnx.TensorProto.FLOAT
    expected = {FEATURE_INPUT: n_features, ALGO_INPUT: 1, OUTPUT_NODE: 1}
    values = list(model.graph.input) + list(model.graph.output)
    found = {v.name: v.type.tensor_type for v in values}
    for name, width in expected.items():
        tensor = found.get(name)
        dims = [] if tensor is None else [d.dim_param or d.dim_value for d in tensor.shape.dim]
        if tensor is None or tensor.elem_type != float32 or dims != [BATCH_DIMENSION, width]:
            problems.append(f"'{name}' is not float32 [{BATCH_DIMENSION}, {width}] ({dims})")
    if len(values) != len(expected):
        problems.append(f"inputs/outputs are {sorted(found)}, expected {sorted(expected)}")
    if problems:
        raise RuntimeError("model.onnx breaks the interface: " + "; ".join(problems))


def onnx_scores(model: str | Path | bytes, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """p for each track with ONNX Runtime on one CPU thread, fed x and y."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    session = onnxruntime.InferenceSession(
        source, sess_options=options, providers=["CPUExecutionProvider"]
    )
    feed = {name: np.asarray(inputs[name], np.float32) for name in (FEATURE_INPUT, ALGO_INPUT)}
    return session.run([OUTPUT_NODE], feed)[0]


def export_onnx(
    graph_def: tf.compat.v1.GraphDef,
    path: Path,
    model: keras.Model,
    check_inputs: dict[str, np.ndarray],
    tolerance: float = 1e-5,
) -> OnnxReport:
    """Convert the frozen graph, check it, and write it to path only if ONNX Runtime agrees
    with the Keras model within tolerance on check_inputs."""
    path = Path(path)
    converted = convert_graph_def(graph_def)
    serialized = converted.SerializeToString()
    difference, checked = _agreement(converted, serialized, model, check_inputs)
    require_agreement(difference, tolerance, "model.onnx", checked, f"{path} was not written.")
    write_atomically(path, serialized)
    return _report(path, converted, checked, difference)


def check_onnx(
    path: Path, model: keras.Model, check_inputs: dict[str, np.ndarray], tolerance: float = 1e-5
) -> OnnxReport:
    """Check an existing model.onnx against the Keras model, as export_onnx checks a new one."""
    serialized = Path(path).read_bytes()
    converted = onnx.load_from_string(serialized)
    difference, checked = _agreement(converted, serialized, model, check_inputs)
    require_agreement(difference, tolerance, str(path), checked, "It is not this run's model.")
    return _report(Path(path), converted, checked, difference)


def _agreement(converted, serialized: bytes, model: keras.Model, inputs: dict) -> tuple[float, int]:
    check_onnx_contract(converted, int(inputs[FEATURE_INPUT].shape[1]))
    scores = onnx_scores(serialized, inputs)
    keras_scores = model.predict(inputs, batch_size=4096, verbose=0)
    return float(np.max(np.abs(scores - keras_scores), initial=0.0)), len(keras_scores)


def _report(path: Path, converted, checked: int, difference: float) -> OnnxReport:
    opset = max(e.version for e in converted.opset_import if e.domain in ("", "ai.onnx"))
    return OnnxReport(path, opset, converted.ir_version, checked, difference)
