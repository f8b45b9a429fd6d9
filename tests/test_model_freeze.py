"""The frozen graph: CMSSW's contract, numerical agreement, old-runtime friendliness."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CMSSW_MODELS
from tensorflow.python.framework import op_def_registry

from model_freeze import (
    check_contract,
    freeze_model,
    load_graph_def,
    main,
    run_graph_def,
    strip_default_attributes,
)
from network import build_model_from_config
from pipeline.runs import RunError
from pipeline.settings import SettingsError, default_config

PRODUCTION = CMSSW_MODELS
CFG = default_config()
N_FEATURES = len(CFG["features"])


def with_batch_norm_statistics(model, seed: int = 3):
    """Give every BatchNormalization layer non-trivial statistics, as training would."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            gamma, beta, mean = rng.normal(1, 0.3, n), rng.normal(0, 0.5, n), rng.normal(0, 2, n)
            layer.set_weights([gamma, beta, mean, rng.uniform(0.2, 5, n)])
    return model


@pytest.fixture(scope="module")
def model():
    cfg = dict(CFG, hidden_layers=[32, 16])
    built = build_model_from_config(cfg, np.zeros(N_FEATURES), np.full(N_FEATURES, 4.0))
    return with_batch_norm_statistics(built)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(1)
    x = rng.lognormal(0.0, 2.0, size=(2000, N_FEATURES)).astype(np.float32)
    x[:10, 0] = [4e6, 6e11, -99999, np.nan, np.inf, -np.inf, 0, -1, 1e-30, 2e7]  # spec extremes
    y = rng.choice([4, 5, 6, 7, 8, 9, 10, 11, 22, 23, 24, 26, 13], size=(2000, 1))
    return {"x": x, "y": y.astype(np.float32)}


@pytest.fixture(scope="module")
def frozen(model, inputs, tmp_path_factory):
    path = tmp_path_factory.mktemp("freeze") / "frozen_graph.pb"
    report = freeze_model(model, path, inputs)
    return path, report


def placeholders(graph_def) -> dict[str, tuple[int, list[int]]]:
    return {
        node.name: (node.attr["dtype"].type, [d.size for d in node.attr["shape"].shape.dim])
        for node in graph_def.node
        if node.op == "Placeholder"
    }


def test_graph_has_the_cmssw_interface(frozen):
    path, report = frozen
    graph_def = load_graph_def(path)
    assert placeholders(graph_def) == {
        "x": (tf.float32.as_datatype_enum, [-1, N_FEATURES]),
        "y": (tf.float32.as_datatype_enum, [-1, 1]),
    }
    nodes = {node.name: node for node in graph_def.node}
    assert nodes["Identity"].op == "Identity"
    assert not [node for node in graph_def.node if "Variable" in node.op]
    assert report.nodes == len(graph_def.node)


@pytest.mark.skipif(not PRODUCTION.is_dir(), reason="../shared/cmssw-models is not here")
def test_interface_is_the_production_models(frozen):
    ours = placeholders(load_graph_def(frozen[0]))
    for name in ("CKF_Run3_12_5_0_pre5.pb", "QCDFlatPU_QCDHighPt_ZEE_DisplacedSUSY_2020.pb"):
        production = load_graph_def(PRODUCTION / name)
        assert placeholders(production) == ours, name
        assert "Identity" in {node.name for node in production.node}


@pytest.mark.skipif(not PRODUCTION.is_dir(), reason="../shared/cmssw-models is not here")
def test_graph_runs_like_a_production_graph(frozen, inputs):
    """The same feeding code (x, y -> Identity) serves our graph and CMSSW's."""
    ours = run_graph_def(load_graph_def(frozen[0]), inputs)
    production = run_graph_def(load_graph_def(PRODUCTION / "CKF_Run3_12_5_0_pre5.pb"), inputs)
    assert ours.shape == production.shape == (len(inputs["x"]), 1)
    assert np.isfinite(ours).all()
    assert ((ours > 0) & (ours < 1)).all()


def test_graph_agrees_with_keras_including_outliers(frozen, model, inputs):
    graph_scores = run_graph_def(load_graph_def(frozen[0]), inputs)
    keras_scores = model.predict(inputs, verbose=0)
    assert np.isfinite(graph_scores).all()
    assert np.max(np.abs(graph_scores - keras_scores)) <= 1e-5
    assert frozen[1].max_abs_difference <= 1e-5
    assert frozen[1].checked_tracks == len(inputs["x"])


def test_no_attribute_keeps_its_default_value(frozen):
    graph_def = load_graph_def(frozen[0])
    for node in graph_def.node:
        op_def = op_def_registry.get(node.op)
        for attr_def in op_def.attr:
            if attr_def.HasField("default_value") and attr_def.name in node.attr:
                assert node.attr[attr_def.name] != attr_def.default_value, (node.name, attr_def)
    assert strip_default_attributes(graph_def) == 0  # nothing left to strip


def test_stripping_removes_defaults_and_keeps_the_result(model, inputs, tmp_path):
    graph_def = load_graph_def(freeze_model(model, tmp_path / "g.pb", inputs).path)
    matmul = next(node for node in graph_def.node if node.op == "MatMul")
    matmul.attr["transpose_a"].b = False  # a default value, as newer exporters write them
    assert strip_default_attributes(graph_def) == 1
    assert "transpose_a" not in matmul.attr
    np.testing.assert_array_equal(
        run_graph_def(graph_def, inputs), run_graph_def(load_graph_def(tmp_path / "g.pb"), inputs)
    )


def test_contract_check_rejects_a_wrong_graph(frozen):
    graph_def = load_graph_def(frozen[0])
    next(node for node in graph_def.node if node.name == "y").name = "algo"
    with pytest.raises(RuntimeError, match="no placeholder 'y'"):
        check_contract(graph_def, N_FEATURES)


def test_failed_check_leaves_no_file(model, inputs, tmp_path):
    path = tmp_path / "frozen_graph.pb"
    path.write_bytes(b"previous graph")
    with pytest.raises(RuntimeError, match="disagrees"):
        freeze_model(model, path, inputs, tolerance=-1.0)  # no difference can pass
    assert path.read_bytes() == b"previous graph"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frozen_graph.pb"]


def test_standalone_freeze_of_a_run_folder(model, inputs, tmp_path, capsys):
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "holdout_tracks.npz", x=inputs["x"][:500], y=inputs["y"][:500])
    (tmp_path / "config.py").write_text("deploy_target = 'tf_graph'\n")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "agrees with the Keras model within" in out and "model.onnx" in out
    scores = run_graph_def(load_graph_def(tmp_path / "frozen_graph.pb"), inputs)
    np.testing.assert_allclose(scores, model.predict(inputs, verbose=0), atol=1e-5)
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert sorted(card["files"]) == ["frozen_graph.pb", "model.onnx"]
    assert card["deploy_target"] == "tf_graph" and card["inputs_match_cmssw"] is True


def test_standalone_freeze_names_what_is_missing(tmp_path):
    with pytest.raises(SettingsError, match="not a run folder"):
        main([str(tmp_path)])
    (tmp_path / "config.py").write_text("epochs = 3\n")
    with pytest.raises(RunError, match="has not finished its training"):
        main([str(tmp_path)])


def test_freeze_folds_batch_norm_and_runs_fewer_ops(model, inputs, tmp_path):
    optimised = freeze_model(model, tmp_path / "optimised.pb", inputs)
    plain = freeze_model(model, tmp_path / "plain.pb", inputs, optimize=False)
    ops = {node.op for node in load_graph_def(optimised.path).node}
    assert "Rsqrt" in {node.op for node in load_graph_def(plain.path).node}  # batch norm there
    assert "Rsqrt" not in ops and "ReadVariableOp" not in ops
    assert optimised.nodes < plain.nodes / 1.5
    assert optimised.max_abs_difference <= 1e-5  # against the Keras model, not the copy


def test_a_tf_graph_needs_cmssws_29_inputs(inputs, tmp_path):
    narrow = build_model_from_config(
        dict(CFG, features=CFG["features"][:5], feature_transforms={}, hidden_layers=[8]),
        np.zeros(5),
        np.ones(5),
    )
    with pytest.raises(ValueError, match="'x' has 5 columns, TrackTfClassifier feeds 29"):
        freeze_model(narrow, tmp_path / "g.pb", {"x": inputs["x"][:, :5], "y": inputs["y"]})
    assert not (tmp_path / "g.pb").exists()
    report = freeze_model(
        narrow, tmp_path / "g.pb", {"x": inputs["x"][:, :5], "y": inputs["y"]},
        deploy_target="custom",
    )  # fmt: skip
    assert placeholders(load_graph_def(report.path))["x"][1] == [-1, 5]
    assert report.loadable_by is None and "cannot load" in report.note
    with pytest.raises(RuntimeError, match=r"'x' is not float32 \[-1, 29\]"):
        check_contract(load_graph_def(report.path))  # CMSSW's widths by default


def test_contract_check_rejects_an_extra_placeholder_and_a_fixed_batch(frozen):
    graph_def = load_graph_def(frozen[0])
    extra = graph_def.node.add()
    extra.CopyFrom(next(node for node in graph_def.node if node.name == "y"))
    extra.name = "weights"
    with pytest.raises(RuntimeError, match="placeholders CMSSW does not feed: \\['weights'\\]"):
        check_contract(graph_def, N_FEATURES)
    graph_def = load_graph_def(frozen[0])
    x = next(node for node in graph_def.node if node.name == "x")
    x.attr["shape"].shape.dim[0].size = 16
    with pytest.raises(RuntimeError, match="'x' is not float32"):
        check_contract(graph_def, N_FEATURES)
