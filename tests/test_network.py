"""Tests of network/: the input sanitizer, the algo one-hot, the model, and that it freezes."""

from __future__ import annotations

import collections
import os
import runpy
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from conftest import CMSSW_MODELS  # noqa: E402

from network import (  # noqa: E402
    InputSanitizerLayer,
    OneHotLayer,
    build_model,
    build_model_from_config,
    fit_sanitizer_bounds,
    transforms_for_features,
)

REPO = Path(__file__).resolve().parents[1]
PRODUCTION_GRAPHS = sorted(CMSSW_MODELS.glob("*.pb"))
ALL_TRANSFORMS = ["none", "abs", "log1p", "abs_log1p", "signed_log1p", "log", "abs_log"]

# Values a real ntuple throws at the network (docs/domain.md) plus the IEEE specials.
NASTY = np.array(
    [0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5, 3.0, -3.0, 4e6, 6e11, 2e7, -99999.0, 99999.0,
     3e38, -3e38, np.nan, np.inf, -np.inf],
    dtype=np.float32,
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# An independent NumPy reference of the sanitizer rule, element by element, in float64
# ---------------------------------------------------------------------------------------------
def reference_value(value: float, transform: str, lower: float, upper: float) -> float:
    if np.isnan(value):
        return 0.0
    if transform == "none":
        t = value
    elif transform == "abs":
        t = abs(value)
    elif transform == "log1p":
        t = np.log1p(max(value, 0.0))
    elif transform == "abs_log1p":
        t = np.log1p(abs(value))
    elif transform == "signed_log1p":
        t = np.copysign(np.log1p(abs(value)), value) if value != 0 else 0.0
    elif transform == "log":
        t = np.log(value) if value > 1e-10 else np.log(1e-10)
    elif transform == "abs_log":
        t = np.log(abs(value)) if abs(value) > 1e-10 else np.log(1e-10)
    else:
        raise AssertionError(transform)
    if upper - lower <= 1e-6 * max(abs(lower), abs(upper)):
        return 0.0
    t = min(max(t, lower), upper)
    return 2.0 * (t - lower) / (upper - lower) - 1.0


def reference_sanitize(x, transforms, lower, upper) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for j, name in enumerate(transforms):
            out[i, j] = reference_value(x[i, j], name, float(lower[j]), float(upper[j]))
    return out


def run_layer(layer: keras.layers.Layer, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(layer(tf.constant(x)))


# ---------------------------------------------------------------------------------------------
# InputSanitizerLayer
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transform", ALL_TRANSFORMS)
def test_sanitizer_matches_reference_for_each_transform(transform):
    # Three columns with the same transform and different bounds: narrow, wide, negative-only.
    lower = np.array([-2.0, 0.0, -1e5], dtype=np.float32)
    upper = np.array([5.0, 30.0, -10.0], dtype=np.float32)
    x = np.repeat(NASTY[:, None], 3, axis=1)
    layer = InputSanitizerLayer([transform] * 3, lower, upper)
    out = run_layer(layer, x)
    expected = reference_sanitize(x, [transform] * 3, lower, upper)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6)
    assert np.all(np.isfinite(out)) and out.min() >= -1.0 and out.max() <= 1.0


def test_sanitizer_special_values_map_to_edges_and_centre():
    layer = InputSanitizerLayer(["none", "log1p"], [-10.0, 0.0], [10.0, 5.0])
    x = np.array([[np.nan, np.nan], [np.inf, np.inf], [-np.inf, -np.inf], [0.0, 0.0]], np.float32)
    out = run_layer(layer, x)
    assert out[0].tolist() == [0.0, 0.0]  # NaN -> middle of the bounds, exactly
    assert out[1].tolist() == [1.0, 1.0]  # +inf -> upper edge
    assert out[2].tolist() == [-1.0, -1.0]  # -inf -> lower edge (log1p(max(-inf, 0)) = 0 = lower)
    assert out[3].tolist() == [0.0, -1.0]


def test_sanitizer_outliers_are_clipped_to_the_edge():
    # Bounds of the bulk, as fit_sanitizer_bounds would give: the production extremes saturate.
    transforms = ["log1p", "log1p", "abs_log1p"]  # pt, ptErr, dzClosestPV
    lower = np.log1p([0.1, 1e-3, 0.0]).astype(np.float32)
    upper = np.log1p([500.0, 50.0, 30.0]).astype(np.float32)
    layer = InputSanitizerLayer(transforms, lower, upper)
    x = np.array([[4e6, 6e11, -99999.0], [1.0, 0.01, 0.05]], np.float32)
    out = run_layer(layer, x)
    assert out[0].tolist() == [1.0, 1.0, 1.0]
    assert np.all(np.abs(out[1]) < 1.0)
    np.testing.assert_allclose(out, reference_sanitize(x, transforms, lower, upper), atol=2e-6)


def test_sanitizer_constant_feature_gives_zero():
    # (0, 0) is what an all-NaN column gets from the fit; (5, 5) a genuinely constant feature;
    # (1e6, 1e6 + 0.01) is narrower than float32 can resolve there.
    lower = np.array([0.0, 5.0, 1e6, -1.0], dtype=np.float32)
    upper = np.array([0.0, 5.0, 1e6 + 0.01, 1.0], dtype=np.float32)
    layer = InputSanitizerLayer(["none"] * 4, lower, upper)
    x = np.repeat(NASTY[:, None], 4, axis=1)
    out = run_layer(layer, x)
    assert np.all(out[:, :3] == 0.0)
    np.testing.assert_allclose(out[:, 3], reference_sanitize(x, ["none"] * 4, lower, upper)[:, 3])


def test_sanitizer_random_garbage_stays_finite_and_in_range():
    rng = np.random.default_rng(1)
    transforms = [ALL_TRANSFORMS[j % len(ALL_TRANSFORMS)] for j in range(29)]
    lower = rng.uniform(-5, 0, size=29).astype(np.float32)
    upper = (lower + rng.uniform(0, 10, size=29)).astype(np.float32)
    upper[3] = lower[3]  # one constant column
    x = (rng.standard_normal((2000, 29)) * 10.0 ** rng.integers(-3, 12, (2000, 29))).astype(
        np.float32
    )
    x[rng.random(x.shape) < 0.05] = np.nan
    x[rng.random(x.shape) < 0.02] = np.inf
    x[rng.random(x.shape) < 0.02] = -np.inf
    out = run_layer(InputSanitizerLayer(transforms, lower, upper), x)
    assert np.all(np.isfinite(out)) and out.min() >= -1.0 and out.max() <= 1.0
    np.testing.assert_allclose(out, reference_sanitize(x, transforms, lower, upper), atol=2e-6)


def test_sanitizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"'sqrt'.*column 1.*allowed: none, abs, log1p"):
        InputSanitizerLayer(["none", "sqrt"])
    with pytest.raises(ValueError, match="lower > upper"):
        InputSanitizerLayer(["none"], [1.0], [0.0])
    with pytest.raises(ValueError, match="shape"):
        InputSanitizerLayer(["none", "abs"], [0.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        InputSanitizerLayer(["none"], [np.nan], [1.0])
    with pytest.raises(ValueError, match="3 transforms but the input has 2"):
        InputSanitizerLayer(["none"] * 3)(np.zeros((4, 2), np.float32))


def test_transforms_are_chosen_by_feature_name():
    mapping = {"trk_pt": "log1p", "trk_dz": "abs_log1p", "trk_eta": "none"}
    assert transforms_for_features(["trk_pt", "trk_dz", "trk_eta", "trk_nPixel"], mapping) == [
        "log1p",
        "abs_log1p",
        "none",
        "none",
    ]
    # Reordering the features moves each transform (and so each output) with its feature.
    features = ["trk_pt", "trk_dz", "trk_eta"]
    order = [2, 0, 1]
    lower, upper = np.array([0.0, 0.0, -3.0]), np.array([6.0, 4.0, 3.0])
    x = np.array([[50.0, -7.0, 1.5], [np.nan, 1e5, -0.2]], np.float32)
    layer = InputSanitizerLayer(transforms_for_features(features, mapping), lower, upper)
    reordered = InputSanitizerLayer(
        transforms_for_features([features[i] for i in order], mapping), lower[order], upper[order]
    )
    np.testing.assert_array_equal(run_layer(reordered, x[:, order]), run_layer(layer, x)[:, order])

    with pytest.raises(ValueError, match=r"'logg' for feature 'trk_dz'; allowed"):
        transforms_for_features(["trk_pt", "trk_dz"], {"trk_dz": "logg"})
    with pytest.raises(ValueError, match="trk_ptt"):
        transforms_for_features(["trk_pt"], {"trk_ptt": "log1p"})


# ---------------------------------------------------------------------------------------------
# fit_sanitizer_bounds
# ---------------------------------------------------------------------------------------------
def test_fit_bounds_ignore_rare_outliers_and_nan():
    rng = np.random.default_rng(2)
    n = 200_000
    pt = rng.exponential(2.0, n).astype(np.float32)
    pt_err = (pt * 0.02).astype(np.float32)
    dz = rng.normal(0.0, 0.5, n).astype(np.float32)
    eta = rng.uniform(-2.5, 2.5, n).astype(np.float32)
    clean = np.stack([pt, pt_err, dz, eta], axis=1)
    x = clean.copy()
    bad = rng.choice(n, size=n // 2000, replace=False)  # 0.05 % pathological tracks
    x[bad, 0], x[bad, 1], x[bad, 2] = 4e6, 6e11, -99999.0
    x[rng.choice(n, size=n // 100, replace=False), 3] = np.nan
    x[rng.choice(n, size=10, replace=False), 0] = np.inf

    transforms = ["log1p", "log1p", "abs_log1p", "none"]
    lower, upper = fit_sanitizer_bounds(x, transforms, quantile=0.001)
    assert lower.dtype == np.float32 and upper.dtype == np.float32 and lower.shape == (4,)
    # The 0.05 % outliers may only shift the bounds within the bulk's own tails: a few 1e-4 in
    # quantile, never towards log1p(6e11) = 27.
    bulk = np.stack([np.log1p(pt), np.log1p(pt_err), np.log1p(np.abs(dz)), eta], axis=1)
    bulk_quantiles = np.quantile(bulk, [0.0005, 0.002, 0.998, 0.9997], axis=0)
    assert np.all((bulk_quantiles[0] <= lower) & (lower <= bulk_quantiles[1])), lower
    assert np.all((bulk_quantiles[2] <= upper) & (upper <= bulk_quantiles[3])), upper
    assert upper[0] < np.log1p(100.0) and upper[1] < np.log1p(10.0) and upper[2] < np.log1p(10.0)


def test_fit_bounds_edge_cases_and_subsampling():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300_000, 3)).astype(np.float32)
    x[:, 1] = np.nan  # all NaN -> (0, 0)
    x[:, 2] = 7.0  # constant
    lower, upper = fit_sanitizer_bounds(x, ["none", "abs", "none"], max_tracks=20_000, seed=5)
    assert lower[1] == upper[1] == 0.0 and lower[2] == upper[2] == 7.0
    assert abs(lower[0] - (-3.09)) < 0.3 and abs(upper[0] - 3.09) < 0.3
    again = fit_sanitizer_bounds(x, ["none", "abs", "none"], max_tracks=20_000, seed=5)
    np.testing.assert_array_equal(again[0], lower)
    # The layer turns the all-NaN and the constant columns into 0, never NaN.
    out = run_layer(InputSanitizerLayer(["none", "abs", "none"], lower, upper), x[:100])
    assert np.all(out[:, 1:] == 0.0) and np.all(np.isfinite(out))

    with pytest.raises(ValueError, match="2 columns but 3 transforms"):
        fit_sanitizer_bounds(x[:, :2], ["none"] * 3)
    with pytest.raises(ValueError, match="quantile"):
        fit_sanitizer_bounds(x, ["none"] * 3, quantile=0.6)
    with pytest.raises(ValueError, match="'exp'"):
        fit_sanitizer_bounds(x, ["none", "exp", "none"])


# ---------------------------------------------------------------------------------------------
# OneHotLayer
# ---------------------------------------------------------------------------------------------
def test_one_hot_covers_every_algorithm():
    layer = OneHotLayer()
    y = np.array([[4.0], [26.0], [45.0], [46.0], [-1.0], [0.0], [3.9999], [np.nan], [1e10]])
    out = run_layer(layer, y.astype(np.float32))
    assert out.dtype == np.float32 and out.shape == (9, 46)
    expected = np.zeros((9, 46), np.float32)
    for row, column in [(0, 4), (1, 26), (2, 45), (5, 0), (6, 4)]:
        expected[row, column] = 1.0
    np.testing.assert_array_equal(out, expected)  # 46, -1, NaN, 1e10 -> all-zero rows

    assert run_layer(OneHotLayer(25), np.array([[26.0]], np.float32)).sum() == 0.0
    with pytest.raises(ValueError, match="depth"):
        OneHotLayer(0)


# ---------------------------------------------------------------------------------------------
# build_model
# ---------------------------------------------------------------------------------------------
FEATURES = ["trk_pt", "trk_dz", "trk_eta", "trk_nPixel"]
TRANSFORMS = {"trk_pt": "log1p", "trk_dz": "abs_log1p"}
LOWER = np.array([0.0, 0.0, -2.5, 0.0], np.float32)
UPPER = np.array([5.0, 3.0, 2.5, 8.0], np.float32)


def small_model(**settings) -> keras.Model:
    settings.setdefault("hidden_layers", (16, 8))
    return build_model(FEATURES, TRANSFORMS, LOWER, UPPER, **settings)


def sample_inputs(n: int, n_features: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_features)) * 10.0 ** rng.integers(-2, 7, (n, n_features))
    x = x.astype(np.float32)
    x[rng.random(x.shape) < 0.01] = np.nan
    y = rng.integers(-1, 47, (n, 1)).astype(np.float32)
    return [x, y]


def test_build_model_inputs_outputs_and_parameters():
    model = small_model()
    assert [t.name for t in model.inputs] == ["x", "y"]
    assert [tuple(t.shape) for t in model.inputs] == [(None, 4), (None, 1)]
    assert all(t.dtype == "float32" for t in model.inputs)
    assert tuple(model.outputs[0].shape) == (None, 1)

    x, y = sample_inputs(500, 4)
    p = model.predict([x, y], verbose=0)
    assert p.shape == (500, 1) and np.all((p > 0) & (p < 1))
    # Inputs can be given by name too, as the freezing code may do.
    by_name = model.predict({"x": x, "y": y}, verbose=0)
    np.testing.assert_allclose(by_name, p, atol=1e-6)

    # 4 + 46 inputs; Dense without bias before BatchNorm (4 per unit, 2 of them trainable).
    dense = (50 * 16 + 16 * 8) + (8 + 1)
    batch_norm = 4 * (16 + 8)
    assert model.count_params() == dense + batch_norm + 2 * 4  # + the sanitizer's bounds
    no_bn = small_model(batch_norm=False, dropout=0.0)
    assert no_bn.count_params() == (50 * 16 + 16) + (16 * 8 + 8) + (8 + 1) + 2 * 4
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in no_bn.layers)


def test_build_model_is_reproducible_with_a_seed():
    a, b, c = small_model(seed=1), small_model(seed=1), small_model(seed=2)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[2], c.get_weights()[2])
    # Different layers do not get the same draw.
    kernels = [w for w in a.get_weights() if w.ndim == 2]
    assert not np.allclose(kernels[0][:8, :8], kernels[1][:8, :8])


def test_build_model_uses_the_bounds_and_transforms_by_feature():
    model = small_model()
    sanitizer = model.get_layer("input_sanitizer")
    assert sanitizer.transforms == ["log1p", "abs_log1p", "none", "none"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(sanitizer.lower), LOWER)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(sanitizer.upper), UPPER)
    assert not sanitizer.trainable_weights
    assert model.get_layer("algo_one_hot").depth == 46


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"activation": "relux"}, "activation"),
        ({"activation": None}, "activation"),
        ({"dropout": -0.1}, "dropout"),
        ({"dropout": 1.0}, "dropout"),
        ({"hidden_layers": []}, "hidden_layers"),
        ({"hidden_layers": [16, 0]}, "hidden_layers"),
        ({"hidden_layers": 16}, "hidden_layers"),
        ({"l2": -1e-5}, "l2"),
        ({"l2": float("nan")}, "l2"),
        ({"initializer": "he_nromal"}, "initializer"),
        ({"algo_depth": 0}, "algo_depth"),
        ({"batch_norm": "yes"}, "batch_norm"),
    ],
)
def test_build_model_validates_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        small_model(**settings)


def test_build_model_validates_features_and_bounds():
    with pytest.raises(ValueError, match="features"):
        build_model([], {}, LOWER[:0], UPPER[:0])
    with pytest.raises(ValueError, match="more than once"):
        build_model(["trk_pt", "trk_pt"], {}, LOWER[:2], UPPER[:2])
    with pytest.raises(ValueError, match="shape"):
        build_model(FEATURES, TRANSFORMS, LOWER[:3], UPPER[:3])
    with pytest.raises(ValueError, match="trk_ptt"):
        build_model(FEATURES, {"trk_ptt": "log1p"}, LOWER, UPPER)


def test_build_model_from_the_project_config():
    cfg = runpy.run_path(str(REPO / "config.py"))
    n = len(cfg["features"])
    lower, upper = np.full(n, -1.0, np.float32), np.full(n, 1.0, np.float32)
    model = build_model_from_config(cfg, lower, upper)
    assert [tuple(t.shape) for t in model.inputs] == [(None, n), (None, 1)]
    assert model.get_layer("algo_one_hot").depth == cfg["algo_depth"]
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == list(cfg["hidden_layers"]) + [1]
    with pytest.raises(ValueError, match="dropout"):
        build_model_from_config({**cfg, "dropout": -1}, lower, upper)
    with pytest.raises(KeyError, match="features"):
        build_model_from_config({}, lower, upper)


# ---------------------------------------------------------------------------------------------
# Saving and freezing
# ---------------------------------------------------------------------------------------------
def test_save_and_reload_give_identical_outputs(tmp_path):
    model = small_model()
    sanitizer = model.get_layer("input_sanitizer")
    sanitizer.set_bounds([0.1, 0.0, -2.0, 1.0], [4.0, 2.0, 2.0, 7.0])  # as after a fit
    x, y = sample_inputs(1000, 4, seed=4)
    before = model.predict([x, y], verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    after = reloaded.predict([x, y], verbose=0)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-7)
    reloaded_sanitizer = reloaded.get_layer("input_sanitizer")
    assert isinstance(reloaded_sanitizer, InputSanitizerLayer)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(reloaded_sanitizer.lower), np.float32([0.1, 0.0, -2.0, 1.0])
    )
    assert reloaded_sanitizer.transforms == sanitizer.transforms
    assert isinstance(reloaded.get_layer("algo_one_hot"), OneHotLayer)


def test_layer_config_round_trip():
    layer = InputSanitizerLayer(["abs", "signed_log1p"], [0.0, -3.0], [2.0, 3.0], name="s")
    clone = InputSanitizerLayer.from_config(layer.get_config())
    x = NASTY.reshape(-1, 2)
    np.testing.assert_array_equal(run_layer(clone, x), run_layer(layer, x))
    assert OneHotLayer.from_config(OneHotLayer(30).get_config()).depth == 30


# Ops the production graphs use, plus basic ones every TensorFlow 1.x/2.x C++ runtime has.
BASIC_OPS = {
    "Placeholder", "Const", "Identity", "NoOp", "MatMul", "BiasAdd", "AddV2", "Add", "Sub", "Mul",
    "RealDiv", "Abs", "Log", "Log1p", "Sign", "Maximum", "Minimum", "IsNan", "Select", "SelectV2",
    "Greater", "Cast", "Round", "OneHot", "Reshape", "ConcatV2",
    "Rsqrt", "Elu", "Relu", "Sigmoid", "Tanh",
}  # fmt: skip


def freeze(model: keras.Model, n_features: int):
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, n_features], tf.float32, name="x"),
            tf.TensorSpec([None, 1], tf.float32, name="y"),
        ]
    )
    def serve(x, y):
        return model([x, y], training=False)

    return convert_variables_to_constants_v2(serve.get_concrete_function())


def test_model_freezes_to_old_runtime_ops():
    n = 29
    features = [f"f{i}" for i in range(n)]
    transforms = {f"f{i}": ALL_TRANSFORMS[i % len(ALL_TRANSFORMS)] for i in range(n)}
    rng = np.random.default_rng(6)
    lower = rng.uniform(-3, 0, n).astype(np.float32)
    upper = (lower + rng.uniform(0.5, 5, n)).astype(np.float32)
    model = build_model(features, transforms, lower, upper, hidden_layers=(32, 16))
    frozen = freeze(model, n)
    graph_def = frozen.graph.as_graph_def()
    ops = collections.Counter(node.op for node in graph_def.node)

    allowed = set(BASIC_OPS)
    for path in PRODUCTION_GRAPHS:
        production = tf.compat.v1.GraphDef()
        production.ParseFromString(path.read_bytes())
        allowed |= {node.op for node in production.node}
    assert set(ops) <= allowed, sorted(set(ops) - allowed)
    assert "VarHandleOp" not in ops and "ReadVariableOp" not in ops
    # Vectorised over the columns: no per-feature slicing.
    assert ops["StridedSlice"] == 0 and ops["Split"] == 0 and ops["Unpack"] == 0
    dtypes = {node.attr[key].type for node in graph_def.node for key in ("T", "dtype", "DstT")
              if key in node.attr}  # fmt: skip
    assert tf.float64.as_datatype_enum not in dtypes
    assert sorted(n.name for n in graph_def.node if n.op == "Placeholder") == ["x", "y"]

    x, y = sample_inputs(256, n, seed=7)
    x[0] = np.inf
    x[1] = np.nan
    frozen_out = frozen(tf.constant(x), tf.constant(y))[0].numpy()
    keras_out = keras.ops.convert_to_numpy(model([x, y], training=False))
    np.testing.assert_allclose(frozen_out, keras_out, atol=1e-6)
    assert np.all(np.isfinite(frozen_out))
