"""Freeze-time graph optimisation: constant-mask selects folded, results unchanged."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from deploy.graph_optimize import constant_select_replacements, optimize_graph_def
from model_freeze import run_graph_def


def masked_graph() -> tf.compat.v1.GraphDef:
    """x -> where(all True, |x|, x) -> where(all False, log, .) -> where(mixed, ., -.) ->
    where(True, ., 0.0) -> + where(all False, ., 0.0) (returns a broadcast scalar: must stay)
    -> Identity."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        tf.compat.v1.placeholder(tf.float32, [None, 1], name="y")
        t = tf.where(tf.constant([True, True, True]), tf.abs(x), x, name="all_true")
        t = tf.where(tf.constant([False, False, False]), tf.math.log(t), t, name="all_false")
        t = tf.where(tf.constant([True, False, True]), t, -t, name="mixed")
        t = tf.where(tf.constant(True), t, 0.0, name="scalar_condition")
        t = t + tf.where(tf.constant([False, False, False]), t, 1.0, name="broadcast_branch")
        tf.identity(tf.reduce_sum(t, axis=1, keepdims=True), name="Identity")
    return graph.as_graph_def()


def test_constant_selects_are_found_and_folded():
    graph_def = masked_graph()
    replacements = constant_select_replacements(graph_def)
    assert sorted(replacements) == ["all_false", "all_true", "scalar_condition"]
    assert replacements["all_false"] == "all_true:0"  # the else branch: the previous select
    optimized = optimize_graph_def(graph_def, "Identity")
    ops = [node.op for node in optimized.node]
    assert ops.count("SelectV2") == 2 and "Log" not in ops  # the dead log branch is pruned
    inputs = {"x": np.array([[-1.0, 2.0, -3.0], [4.0, -5.0, 0.5]], np.float32)}
    inputs["y"] = np.zeros((2, 1), np.float32)
    np.testing.assert_array_equal(
        run_graph_def(optimized, inputs), run_graph_def(masked_graph(), inputs)
    )
    np.testing.assert_array_equal(run_graph_def(optimized, inputs)[:, 0], [5.0, 2.5])
