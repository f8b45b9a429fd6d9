"""deploy.cost runs graphs as CMSSW does; the figures themselves come from the benchmark."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from deploy.cost import (
    FLOOR,
    best_of,
    cmssw_like_session,
    floor_graph_def,
    measure_rounds,
    net_of_floor,
    paired_ratios,
)


def test_floor_graph_has_the_interface_and_runs_batches(tmp_path):
    path = tmp_path / "floor.pb"
    path.write_bytes(floor_graph_def(5).SerializeToString())
    run, session = cmssw_like_session(path)
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    np.testing.assert_array_equal(run(x, np.ones((2, 1), np.float32)), [[11.0], [36.0]])
    session.close()


def test_every_graph_and_batch_size_gets_a_figure(tmp_path):
    path = tmp_path / "g.pb"
    path.write_bytes(floor_graph_def(29).SerializeToString())
    inputs = {"x": np.ones((64, 29), np.float32), "y": np.ones((64, 1), np.float32)}
    samples = measure_rounds({"a": path, "b": path}, inputs, (16, 32), 3, 0.01)
    assert all(len(rounds) == 3 for per in samples.values() for rounds in per.values())
    results = best_of(samples)
    assert sorted(results) == sorted(["a", "b", FLOOR])
    assert results["a"][16] == min(samples["a"][16])
    assert all(sorted(r) == [16, 32] and min(r.values()) > 0 for r in results.values())
    net = net_of_floor(results)
    assert sorted(net) == ["a", "b"]
    assert net["a"][16] == results["a"][16] - results[FLOOR][16]


def test_paired_ratios_compare_each_round_above_the_floor():
    samples = {
        FLOOR: {16: [10.0, 20.0, 10.0]},
        "ref": {16: [20.0, 40.0, 30.0]},  # 10, 20, 20 above the floor
        "new": {16: [15.0, 30.0, 30.0]},  # 5, 10, 20
    }
    ratios = paired_ratios(samples, "ref")
    assert ratios == {"ref": {16: 1.0}, "new": {16: 0.5}}  # median of 0.5, 0.5, 1.0
