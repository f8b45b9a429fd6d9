"""deploy.cost runs graphs as CMSSW does; the figures themselves come from the benchmark."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from deploy.cost import (
    FLOOR,
    cmssw_like_session,
    floor_graph_def,
    microseconds_per_track,
    net_of_floor,
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
    results = microseconds_per_track(
        {"a": path, "b": path}, inputs, batch_sizes=(16, 32), rounds=2, seconds_per_measurement=0.01
    )
    assert sorted(results) == sorted(["a", "b", FLOOR])
    assert all(sorted(r) == [16, 32] and min(r.values()) > 0 for r in results.values())
    net = net_of_floor(results)
    assert sorted(net) == ["a", "b"]
    assert net["a"][16] == results["a"][16] - results[FLOOR][16]
