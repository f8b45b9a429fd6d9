"""model.onnx: converted from the frozen graph, CMSSW-readable, and equal to the Keras model."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import onnx
import pytest

from deploy.onnx_export import check_onnx_contract, convert_graph_def, export_onnx, onnx_scores
from model_freeze import freeze_model, load_graph_def
from network import build_model_from_config
from pipeline.settings import default_config

CFG = default_config()
N = len(CFG["features"])


@pytest.fixture(scope="module")
def inputs():
    """Tracks with every kind of value the sanitizer and the one-hot must survive."""
    rng = np.random.default_rng(5)
    x = rng.lognormal(0.0, 2.0, size=(3000, N)).astype(np.float32)
    x *= rng.choice([-1.0, 1.0], size=x.shape).astype(np.float32)
    for value, fraction in ((np.nan, 0.01), (np.inf, 0.01), (-np.inf, 0.01)):
        x[rng.random(x.shape) < fraction] = value
    x[:4, 0] = [4e6, 6e11, -99999, 1e-30]
    algos = [4, 5, 6, 22, 23, 24, 26, 0, 45, -1, -3, 46, 60, np.nan, 1e10, 10.4, 10.6]
    return {"x": x, "y": rng.choice(algos, size=(3000, 1)).astype(np.float32)}


@pytest.fixture(scope="module")
def model(inputs):
    cfg = dict(CFG, hidden_layers=[16, 8])
    lower, upper = np.full(N, -2.0), np.full(N, 3.0)
    built = build_model_from_config(cfg, lower, upper)
    built.compile(optimizer="adam", loss="binary_crossentropy")
    labels = np.random.default_rng(0).integers(0, 2, len(inputs["x"]))
    built.fit(inputs, labels, batch_size=512, epochs=1, verbose=0)  # moves the BN statistics
    return built


@pytest.fixture(scope="module")
def graph_def(model, inputs, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "frozen_graph.pb"
    return load_graph_def(freeze_model(model, path, inputs).path)


def test_onnx_reproduces_keras_on_nan_inf_and_out_of_range_algo(graph_def, model, inputs, tmp_path):
    report = export_onnx(graph_def, tmp_path / "model.onnx", model, inputs)
    assert report.max_abs_difference <= 1e-5 and report.checked_tracks == 3000
    scores = onnx_scores(tmp_path / "model.onnx", inputs)
    keras_scores = model.predict(inputs, verbose=0)
    assert np.isfinite(scores).all()
    assert np.max(np.abs(scores - keras_scores)) <= 1e-5


def test_onnx_interface_and_versions(graph_def, model, inputs, tmp_path):
    export_onnx(graph_def, tmp_path / "model.onnx", model, inputs)
    proto = onnx.load(tmp_path / "model.onnx")
    shapes = {
        value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        for value in list(proto.graph.input) + list(proto.graph.output)
    }
    assert shapes == {"x": ["N", N], "y": ["N", 1], "Identity": ["N", 1]}
    assert [(e.domain, e.version) for e in proto.opset_import] == [("", 17)]
    assert proto.ir_version <= 8 and proto.producer_name == "tf2onnx"
    ops = {node.op_type for node in proto.graph.node}
    assert {"Where", "OneHot", "Log", "MatMul"} <= ops and "Log1p" not in ops
    for batch in (1, 16, 1024):  # the batch dimension is free
        part = {name: value[:batch] for name, value in inputs.items()}
        assert onnx_scores(tmp_path / "model.onnx", part).shape == (batch, 1)


def test_a_wrong_interface_is_refused(graph_def):
    proto = convert_graph_def(graph_def)
    check_onnx_contract(proto, N)
    with pytest.raises(RuntimeError, match=r"'x' is not float32 \[N, 28\]"):
        check_onnx_contract(proto, N - 1)
    proto.graph.output[0].name = "output"
    with pytest.raises(RuntimeError, match="breaks the interface"):
        check_onnx_contract(proto, N)
    newer = convert_graph_def(graph_def, opset=18)
    with pytest.raises(RuntimeError, match="opset 18 / IR version"):
        check_onnx_contract(newer, N)


def test_disagreement_writes_nothing(graph_def, model, inputs, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    other = keras.models.clone_model(model)  # same graph shape, other (fresh) weights
    with pytest.raises(RuntimeError, match="model.onnx disagrees with the Keras model"):
        export_onnx(graph_def, path, other, inputs)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
