"""Make a frozen graph cheaper to run, without changing what it computes.

Two passes, both checked afterwards by the freeze (frozen graph against the Keras model):

1. Selects whose condition is a constant that is all True (or all False), with the chosen
   branch already of the output's shape, are replaced by that branch. The input sanitizer
   picks each column's transform with such per-column masks; for a transform no feature uses,
   or where every column is valid, the mask is constant, and grappler does not fold a mask
   that is broadcast over the batch.
2. Grappler's constant folding, arithmetic simplification, dependency optimiser and pruning,
   run once. These leave only ops an older TensorFlow runtime knows (no fused or
   layout-specific ops, which "remapper" and "layout" would add).

CMSSW's session would redo pass 2 at every start (an older runtime may do less of it); done
here, the stored graph already is the small one.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
from tensorflow.python.framework import tensor_util
from tensorflow.python.grappler import tf_optimizer

OFFLINE_OPTIMIZERS = ("constfold", "arithmetic", "dependency", "pruning")


def import_graph(graph_def: tf.compat.v1.GraphDef) -> tf.Graph:
    """A tf.Graph of graph_def, which is left as it is."""
    # import_graph_def writes default attributes into the GraphDef it is given: give it a copy.
    copy = tf.compat.v1.GraphDef()
    copy.CopyFrom(graph_def)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(copy, name="")
    return graph


def _same_shape(a: tf.Tensor, b: tf.Tensor) -> bool:
    return a.shape.rank is not None and a.shape.as_list() == b.shape.as_list()


def constant_select_replacements(graph_def: tf.compat.v1.GraphDef) -> dict[str, str]:
    """Select node name -> the tensor ("node:port") that it always returns."""
    replacements = {}
    for op in import_graph(graph_def).get_operations():
        if op.type not in ("Select", "SelectV2") or op.inputs[0].op.type != "Const":
            continue
        condition = tensor_util.MakeNdarray(op.inputs[0].op.get_attr("value"))
        if condition.size == 0 or not (condition.all() or not condition.any()):
            continue
        chosen = op.inputs[1] if condition.all() else op.inputs[2]
        if _same_shape(chosen, op.outputs[0]):
            replacements[op.name] = chosen.name
    return replacements


def _rewired(reference: str, replacements: dict[str, str]) -> str:
    control = reference.startswith("^")
    name, _, port = reference.lstrip("^").partition(":")
    if name not in replacements or port not in ("", "0"):
        return reference
    target = replacements[name]
    while target.split(":")[0] in replacements:  # a select of a select
        target = replacements[target.split(":")[0]]
    return "^" + target.split(":")[0] if control else target


def fold_constant_selects(graph_def: tf.compat.v1.GraphDef, keep: tuple[str, ...]) -> int:
    """Rewire the consumers of constant-condition selects to the branch they always return
    (pass 1), in place; the selects themselves are left for pruning. Returns how many."""
    replacements = {
        name: tensor
        for name, tensor in constant_select_replacements(graph_def).items()
        if name not in keep
    }
    for node in graph_def.node:
        node.input[:] = [_rewired(reference, replacements) for reference in node.input]
    return len(replacements)


def run_grappler(graph_def: tf.compat.v1.GraphDef, fetch: str) -> tf.compat.v1.GraphDef:
    """Pass 2 on a frozen graph, keeping the placeholders and the node `fetch`."""
    graph = import_graph(graph_def)
    # Grappler keeps the nodes of the "train_op" collection; placeholders are always kept.
    graph.add_to_collection("train_op", graph.get_operation_by_name(fetch))
    meta_graph = tf.compat.v1.train.export_meta_graph(graph=graph, graph_def=graph_def)
    config = config_pb2.ConfigProto()
    rewrite = config.graph_options.rewrite_options
    rewrite.optimizers[:] = OFFLINE_OPTIMIZERS
    rewrite.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.TWO
    return tf_optimizer.OptimizeGraph(config, meta_graph)


def optimize_graph_def(graph_def: tf.compat.v1.GraphDef, fetch: str) -> tf.compat.v1.GraphDef:
    """Both passes; the result computes what graph_def computes at `fetch`."""
    optimized = tf.compat.v1.GraphDef()
    optimized.CopyFrom(graph_def)
    fold_constant_selects(optimized, keep=(fetch,))
    return run_grappler(optimized, fetch)
