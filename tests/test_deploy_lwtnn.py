"""lwtnn export: the model variant, the JSON, and lwtnn's forward pass checked three ways."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from conftest import CMSSW_MODELS

from cmssw.classifiers import DERIVED_INPUTS, LWTNN_INPUTS, derived_input
from deploy.lwtnn import (
    LwtnnNetwork,
    export_lwtnn,
    keras_model_from_lwtnn,
    lwtnn_config,
    lwtnn_scores,
)
from make_ntuples import generate_events
from network import build_lwtnn_model, fit_linear_scaling

PRODUCTION = CMSSW_MODELS
PRODUCTION_JSON = PRODUCTION / "LWTNN_network_10_5_X_v1.json"


@pytest.fixture(scope="module")
def tracks() -> dict[str, np.ndarray]:
    """Synthetic tracks with every lwtnn input, the derived ones as CMSSW computes them."""
    _, arrays = generate_events("ttbar", 60, 4)
    for name in DERIVED_INPUTS:
        arrays[name] = derived_input(name, arrays)
    return arrays


@pytest.fixture(scope="module")
def x(tracks) -> np.ndarray:
    return np.column_stack([tracks[name] for name in LWTNN_INPUTS]).astype(np.float32)


@pytest.fixture(scope="module")
def model(tracks, x):
    assert not np.isfinite(x).all()  # NaN and outliers are in the training tracks
    bounds = fit_linear_scaling(x)
    built = build_lwtnn_model(LWTNN_INPUTS, *bounds, hidden_layers=[24, 12], dropout=0.2)
    built.compile(optimizer="adam", loss="binary_crossentropy")
    history = built.fit({"x": x}, tracks["trk_isTrue"], batch_size=256, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    return built


def test_scaling_is_robust_and_ignores_non_finite_values():
    rng = np.random.default_rng(0)
    column = rng.normal(10.0, 2.0, 10_000)
    polluted = column.copy()
    polluted[:20] = [4e6] * 10 + [-99999] * 5 + [np.nan] * 3 + [np.inf] * 2
    x = np.column_stack([column, polluted, np.full(10_000, 7.0), np.r_[np.zeros(9990), [1] * 10]])
    offset, scale, lower, upper = fit_linear_scaling(x)
    assert offset[0] == pytest.approx(-10.0, abs=0.1) and offset[1] == pytest.approx(
        offset[0], abs=0.01
    )
    assert scale[1] == pytest.approx(scale[0], rel=0.01)  # outliers do not widen the scale
    assert scale[0] == pytest.approx(2 / (2 * 1.645 * 2.0), rel=0.05)  # 90 % of a N(10, 2)
    assert (offset[2], scale[2]) == (-7.0, 1.0)  # constant: shifted to 0, scale 1
    assert (offset[3], scale[3]) == (0.0, 2.0)  # empty central range: the full range instead
    finite = polluted[np.isfinite(polluted)]
    assert lower[1] == pytest.approx(np.quantile(finite, 0.001), rel=1e-6)  # training clip
    assert upper[1] == pytest.approx(np.quantile(finite, 0.999), rel=1e-6)
    assert lower[0] < 4 and upper[0] < 20  # 4e6 and -99999 are not bounds
    with pytest.raises(ValueError, match="quantile must be in"):
        fit_linear_scaling(x, quantile=0.5)


def test_scaling_layer_clips_and_cleans_in_training_only():
    from network.custom.linear_scaling import LinearScalingLayer

    layer = LinearScalingLayer([-1.0, 0.0], [2.0, 1.0], lower=[0.0, -5.0], upper=[3.0, 5.0])
    x = np.array([[4e6, np.nan], [2.0, -np.inf]], np.float32)
    np.testing.assert_array_equal(layer(x, training=True), [[4.0, 0.0], [2.0, -5.0]])
    inference = np.asarray(layer(x, training=False))
    np.testing.assert_array_equal(inference[0, 0], (4e6 - 1.0) * 2.0)  # what lwtnn computes
    assert np.isnan(inference[0, 1]) and inference[1, 1] == -np.inf


def test_the_variant_refuses_what_lwtnn_cannot_compute():
    with pytest.raises(ValueError, match="'selu' has no lwtnn equivalent.*use one of linear, relu"):
        build_lwtnn_model(LWTNN_INPUTS, np.zeros(22), np.ones(22), activation="selu")
    x_in = keras.Input((22,), name="x")
    h = keras.layers.Dense(4, activation="gelu")(x_in)
    odd = keras.Model({"x": x_in}, keras.layers.Dense(1, activation="sigmoid")(h))
    with pytest.raises(ValueError, match="does not start with LinearScalingLayer"):
        lwtnn_config(odd, LWTNN_INPUTS)
    from network.custom.linear_scaling import LinearScalingLayer

    scaled = LinearScalingLayer(np.zeros(22), np.ones(22))(x_in)
    gelu = keras.Model({"x": x_in}, keras.layers.Dense(1, activation="gelu")(scaled))
    with pytest.raises(ValueError, match="activation 'gelu' has no lwtnn equivalent"):
        lwtnn_config(gelu, LWTNN_INPUTS)


def test_json_has_the_production_form_and_keras_weight_order(model):
    config = lwtnn_config(model, LWTNN_INPUTS)
    assert sorted(config) == ["inputs", "layers", "nodes", "outputs"]
    assert [entry["name"] for entry in config["inputs"]] == list(LWTNN_INPUTS)
    assert config["outputs"] == ["out_0"]
    assert [layer["activation"] for layer in config["layers"]] == ["elu", "elu", "sigmoid"]
    first = config["layers"][0]
    assert sorted(first) == ["activation", "architecture", "bias", "weights"]
    # batch norm folded: W * s, row-major over outputs (all weights of output 0 first)
    dense, norm = model.get_layer("dense_0"), model.get_layer("batch_norm_0")
    gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in norm.get_weights())
    s = gamma / np.sqrt(variance + norm.epsilon)
    kernel = np.asarray(dense.get_weights()[0], np.float64)
    np.testing.assert_allclose(first["weights"][:22], kernel[:, 0] * s[0], rtol=1e-6)
    np.testing.assert_allclose(first["bias"], beta - mean * s, rtol=1e-5, atol=1e-7)
    scaling = model.get_layer("linear_scaling").get_weights()
    assert [e["offset"] for e in config["inputs"]] == pytest.approx(scaling[0].tolist())
    if PRODUCTION_JSON.exists():  # the same keys, level by level, as the production file
        production = json.loads(PRODUCTION_JSON.read_text())
        assert sorted(production) == sorted(config)
        assert sorted(production["layers"][0]) == sorted(first)
        assert sorted(production["inputs"][0]) == sorted(config["inputs"][0])
        assert production["nodes"][-1]["type"] == config["nodes"][-1]["type"] == "input"


def test_the_evaluator_on_a_network_computed_by_hand():
    config = {
        "inputs": [{"name": "a", "offset": 1.0, "scale": 2.0},
                   {"name": "b", "offset": 0, "scale": 0.5}],
        "layers": [
            {"architecture": "dense", "activation": "rectified",
             "weights": [1.0, 2.0, -1.0, 0.5, 0.0, 3.0], "bias": [0.5, -1.0, 0.0]},
            {"architecture": "dense", "activation": "sigmoid", "weights": [1.0, -1.0, 2.0],
             "bias": [-40.0]},
        ],
        "outputs": ["out_0"],
    }  # fmt: skip
    net = LwtnnNetwork(config)
    a, b = np.array([1.0, 0.0, -3.0]), np.array([4.0, 2.0, 1.0])
    sa, sb = (a + 1.0) * 2.0, b * 0.5  # (x + offset) * scale
    h = np.maximum(0, np.stack([sa + 2 * sb + 0.5, -sa + 0.5 * sb - 1.0, 3 * sb]))  # rows: outputs
    z = h[0] - h[1] + 2 * h[2] - 40.0
    expected = np.where(z < -30, 0.0, 1 / (1 + np.exp(-z)))
    np.testing.assert_allclose(net.compute({"a": a, "b": b})[:, 0], expected, rtol=1e-12)
    assert net.compute({"a": [100.0], "b": [0.0]})[0, 0] == 1.0  # lwtnn's cut at z > 30
    assert np.isnan(net.compute({"a": [np.nan], "b": [1.0]})[0, 0])
    with pytest.raises(KeyError, match=r"needs inputs \['b'\]"):
        net.compute({"a": a})
    config["layers"][1]["bias"] = [0.0, 1.0]
    with pytest.raises(ValueError, match="3 weights and 2 biases do not fit 3 inputs"):
        LwtnnNetwork(config)


def test_export_agrees_with_keras_and_gives_nan_where_cmssw_would(model, x, tmp_path):
    check = x.copy()
    check[:3, 0] = [np.nan, 4e6, -1.0]
    check[3, 4] = -99999.0
    report = export_lwtnn(model, tmp_path / "lwtnn_network.json", LWTNN_INPUTS, check)
    assert report.max_abs_difference <= 1e-5 and report.checked_tracks == len(x)
    assert report.non_finite_tracks >= 1
    scores = lwtnn_scores(
        tmp_path / "lwtnn_network.json", {n: check[:, i] for i, n in enumerate(LWTNN_INPUTS)}
    )
    keras_scores = model.predict({"x": check}, verbose=0)[:, 0]
    assert np.isnan(scores[0]) and np.isnan(keras_scores[0])
    np.testing.assert_array_equal(np.isnan(scores), np.isnan(keras_scores))
    assert np.nanmax(np.abs(scores - keras_scores)) <= 1e-5
    assert np.nanmin(scores) >= 0.0 and np.nanmax(scores) <= 1.0


def test_failed_check_leaves_no_file(model, x, tmp_path):
    path = tmp_path / "lwtnn_network.json"
    path.write_text("previous")
    with pytest.raises(RuntimeError, match="disagrees with the Keras model.*was not written"):
        export_lwtnn(model, path, LWTNN_INPUTS, x[:100], tolerance=-1.0)
    assert path.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lwtnn_network.json"]


@pytest.mark.skipif(not PRODUCTION_JSON.exists(), reason="../shared/cmssw-models is not here")
def test_production_network_runs_and_matches_its_keras_twin(tracks):
    net = LwtnnNetwork.from_json(PRODUCTION_JSON)
    assert net.input_names == list(LWTNN_INPUTS)
    assert [layer.weights.shape[0] for layer in net.layers] == [256, 128, 64, 32, 8, 1]
    plausible = {name: np.nan_to_num(tracks[name], nan=0.0) for name in LWTNN_INPUTS}
    scores = lwtnn_scores(PRODUCTION_JSON, plausible)
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    assert 0.05 < np.mean(scores) < 0.999  # it separates, it does not answer one value
    twin = keras_model_from_lwtnn(net)
    keras_scores = twin.predict({"x": net.input_matrix(plausible).astype(np.float32)}, verbose=0)
    assert np.max(np.abs(keras_scores[:, 0] - scores)) <= 1e-5


def test_an_lwtnn_run_deploys_what_its_keras_model_scores(tmp_path, monkeypatch):
    """python main.py --deploy_target lwtnn from end to end (the monitor and the evaluation see
    tracks with a NaN input): the JSON's test AUC is the Keras model's within 0.01."""
    from conftest import run_main
    from sklearn.metrics import roc_auc_score

    import main
    from evaluation import classified_tracks
    from evaluation.metrics import below_every_cut, to_mva
    from network.data import predict
    from network.inputs import model_inputs
    from pipeline.settings import load_config

    settings = [
        *("--samples", "{'train': 'data/train', 'test': 'data/test'}"),
        *(
            "--synthetic_samples",
            "{'train': ('ttbar', 120, 5, 'trk_isTrue'), 'test': ('ttbar', 40, 6, 'trk_isTrue')}",
        ),  # fmt: skip
        *("--train_samples", "['train']", "--test_samples", "['test']"),
        *("--monitor_samples", "['test']", "--monitor_every", "1"),
        *("--epochs", "3", "--batch_size", "128", "--hidden_layers", "[16, 8]"),
        *("--train_bdt", "False", "--compare_graphs", "{}", "--bootstrap_samples", "20"),
        *("--deploy_target", "lwtnn", "--run_name", "lwtnn"),
    ]
    result = run_main(tmp_path, *settings)
    assert "lwtnn's forward pass agrees with the Keras model" in result.stdout
    run_dir = (tmp_path / "results" / "latest").resolve()
    assert (run_dir / "lwtnn_network.json").is_file() and (run_dir / "dnnQualityCuts.py").is_file()
    assert len((run_dir / "monitor" / "monitor_log.csv").read_text().splitlines()) == 1 + 3
    deployed_auc = json.loads((run_dir / "model_card.json").read_text())["test_auc"]["by_sample"][
        "test"
    ]

    monkeypatch.chdir(tmp_path)
    cfg, _ = load_config(["--config", str(run_dir / "config.py")])
    test = classified_tracks(main.load_tracks(cfg).query("sample == 'test'"), cfg)
    assert not np.isfinite(test[list(LWTNN_INPUTS)].to_numpy()).all()  # NaN inputs are in
    keras_scores = below_every_cut(
        to_mva(predict(main.load_model(run_dir), model_inputs(test, cfg)))
    )
    keras_auc = roc_auc_score(test["trk_isTrue"].to_numpy().astype(bool), keras_scores)
    assert abs(deployed_auc - keras_auc) <= 0.01
