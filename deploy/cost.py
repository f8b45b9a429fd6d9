"""Inference cost of frozen graphs, run the way CMSSW's TrackTfClassifier runs them.

CMSSW gives each graph a TensorFlow session with one intra-op and one inter-op thread and
evaluates the tracks of an event in batches (cmssw.classifiers.CMSSW_BATCH_SIZE, 16, by
default). Here each graph gets such a session and is called through a compiled callable (the
least Python per call), on the same realistic tracks. The graphs are measured in turn, in a
different order every round. Two summaries: the best round of each graph (other load on the
machine only ever slows a round down), and, against a reference graph, the median over rounds
of the ratio of their costs above the floor, each round's pair measured back to back under
the same load: the figure to trust on a busy machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from cmssw.classifiers import ALGO_INPUT, CMSSW_BATCH_SIZE, FEATURE_INPUT, OUTPUT_NODE
from model_freeze import load_graph_def

DEFAULT_BATCH_SIZES = (CMSSW_BATCH_SIZE, 1024)
# The harness's own cost per call (feeding, fetching, Python) is measured on a graph that does
# almost nothing with the same interface; subtracting it leaves the graph's own cost.
FLOOR = "floor (x, y -> Identity, no model)"


def floor_graph_def(n_features: int = 29) -> tf.compat.v1.GraphDef:
    """A graph with the classifier's interface that only sums x: the harness's floor."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, n_features], name=FEATURE_INPUT)
        y = tf.compat.v1.placeholder(tf.float32, [None, 1], name=ALGO_INPUT)
        tf.identity(tf.reduce_sum(x, axis=1, keepdims=True) + y, name=OUTPUT_NODE)
    return graph.as_graph_def()


def cmssw_like_session(
    graph_def: str | Path | tf.compat.v1.GraphDef,
) -> tuple[Callable, tf.compat.v1.Session]:
    """(run(x, y) -> p, session) for a frozen graph (or its path), on one thread like CMSSW."""
    if not isinstance(graph_def, tf.compat.v1.GraphDef):
        graph_def = load_graph_def(graph_def)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=1, inter_op_parallelism_threads=1
    )
    session = tf.compat.v1.Session(graph=graph, config=config)
    run = session.make_callable(
        graph.get_tensor_by_name(f"{OUTPUT_NODE}:0"),
        [graph.get_tensor_by_name(f"{name}:0") for name in (FEATURE_INPUT, ALGO_INPUT)],
    )
    return run, session


def _time_calls(run: Callable, batches: list[tuple[np.ndarray, np.ndarray]], calls: int) -> float:
    # CPU time of this process (all its threads: TensorFlow runs ops on its own pool thread),
    # what the calls cost; wall time would also count the time other processes held the CPU.
    start = time.process_time()
    for i in range(calls):
        run(*batches[i % len(batches)])
    return time.process_time() - start


def measure_rounds(
    graphs: Mapping[str, str | Path],
    inputs: Mapping[str, np.ndarray],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    rounds: int = 30,
    seconds_per_measurement: float = 0.1,
) -> dict[str, dict[int, list[float]]]:
    """Microseconds per track of each graph (name -> path), per round, at each batch size,
    and of the FLOOR graph. Summarise with best_of, paired_ratios, net_of_floor.

    `inputs`: {"x", "y"} realistic tracks, cycled through in batches. Every graph must take
    the width of inputs["x"] (the production graphs take CMSSW's 29 features).
    """
    x = np.asarray(inputs[FEATURE_INPUT], np.float32)
    y = np.asarray(inputs[ALGO_INPUT], np.float32).reshape(-1, 1)
    sources: dict[str, str | Path | tf.compat.v1.GraphDef] = dict(graphs)
    sources[FLOOR] = floor_graph_def(x.shape[1])
    sessions = {name: cmssw_like_session(source) for name, source in sources.items()}
    results: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batch_sizes} for n in sources}
    try:
        for batch in batch_sizes:
            batches = [
                (x[i : i + batch], y[i : i + batch]) for i in range(0, len(x) - batch + 1, batch)
            ]
            if not batches:
                raise ValueError(f"{len(x)} tracks given, fewer than one batch of {batch}")
            calls = {}
            for name, (run, _) in sessions.items():  # warm up, and size each measurement
                _time_calls(run, batches, 20)
                per_call = max(_time_calls(run, batches, 50) / 50, 1e-7)
                calls[name] = max(20, int(seconds_per_measurement / per_call))
            names = list(sessions)
            for round_index in range(rounds):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    elapsed = _time_calls(sessions[name][0], batches, calls[name])
                    results[name][batch].append(elapsed / (calls[name] * batch) * 1e6)
    finally:
        for _, session in sessions.values():
            session.close()
    return results


def best_of(samples: Mapping[str, Mapping[int, list[float]]]) -> dict[str, dict[int, float]]:
    """The fastest round of each graph: load from other processes only ever slows a round."""
    return {name: {b: min(v) for b, v in per.items()} for name, per in samples.items()}


def paired_ratios(
    samples: Mapping[str, Mapping[int, list[float]]], reference: str
) -> dict[str, dict[int, float]]:
    """Per graph and batch size, the median over rounds of its cost above the floor divided by
    the reference's in the same round: measured back to back, the two see the same load."""
    floor, ref = samples[FLOOR], samples[reference]
    out = {}
    for name, per_batch in samples.items():
        if name == FLOOR:
            continue
        out[name] = {
            batch: statistics.median(
                (v - f) / (r - f) for v, f, r in zip(values, floor[batch], ref[batch], strict=True)
            )
            for batch, values in per_batch.items()
        }
    return out


def microseconds_per_track(
    graphs: Mapping[str, str | Path],
    inputs: Mapping[str, np.ndarray],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    rounds: int = 30,
    seconds_per_measurement: float = 0.1,
) -> dict[str, dict[int, float]]:
    """µs/track (best round) of each graph and of FLOOR: the figure a report shows; subtract
    the floor with net_of_floor for the graphs' own cost."""
    return best_of(measure_rounds(graphs, inputs, batch_sizes, rounds, seconds_per_measurement))


def net_of_floor(results: Mapping[str, Mapping[int, float]]) -> dict[str, dict[int, float]]:
    """Each graph's microseconds per track minus the floor's: what the graph itself costs."""
    floor = results[FLOOR]
    return {
        name: {batch: value - floor[batch] for batch, value in per_batch.items()}
        for name, per_batch in results.items()
        if name != FLOOR
    }
