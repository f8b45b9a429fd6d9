"""Importance weights: the expression is safe and checked, the weights are normalised per
iteration, and they change the training loss exactly as computed by hand."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from tracks.weights import ExpressionError, branches_of, evaluate, training_weights


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ('__import__("os").system("true")', "calls \"__import__('os').system\""),
        ('__import__("os")', "calls '__import__'"),
        ("open('/etc/passwd')", "calls 'open'"),
        ("trk_pt.__class__", "uses Attribute"),
        ("[x for x in trk_pt]", "uses ListComp"),
        ("lambda: 1", "uses Lambda"),
        ("trk_ptt * 2", "did you mean 'trk_pt'?"),
        ("log1p(trk_pt", "is not an expression"),
        ("clip(trk_pt, a_min=0)", "by position"),
        ("trk_pt + 'a'", "only numbers"),
    ],
)
def test_anything_but_arithmetic_on_branches_is_refused(expression, problem):
    with pytest.raises(ExpressionError, match=re.escape(problem)):
        branches_of(expression) if "only numbers" not in problem else evaluate(
            expression, {"trk_pt": np.ones(2)}
        )


def test_the_older_frameworks_weight_evaluates_with_numpy():
    pt = np.array([0.5, 3.0, 80.0, -1.0])
    assert branches_of("log1p(clip(trk_pt, 0, 50))") == ["trk_pt"]
    got = evaluate("log1p(clip(trk_pt, 0, 50))", {"trk_pt": pt})
    np.testing.assert_allclose(got, np.log1p(np.clip(pt, 0, 50)))
    both = evaluate("where(trk_nPixel >= 3, 2, 1) * trk_pt ** 2", {"trk_pt": pt,
                    "trk_nPixel": np.array([4, 2, 3, 0])})  # fmt: skip
    np.testing.assert_allclose(both, [0.5, 9.0, 12800.0, 1.0])


def test_weights_are_normalised_to_mean_one_per_iteration():
    df = pd.DataFrame(
        {
            "trk_originalAlgo": np.array([4, 4, 4, 22, 22], dtype=np.uint8),
            "trk_pt": np.array([1.0, 2.0, 3.0, 10.0, 30.0], dtype=np.float32),
            "sample": pd.Categorical(["qcd", "displaced", "qcd", "qcd", "displaced"]),
        }
    )
    weights = training_weights(df, {"displaced": 2.0}, "trk_pt", "trk_originalAlgo", [4, 22])
    raw = np.array([1.0, 4.0, 3.0, 10.0, 60.0])  # pt, doubled for displaced
    expected = np.concatenate([raw[:3] * 3 / raw[:3].sum(), raw[3:] * 2 / raw[3:].sum()])
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert weights[:3].mean() == pytest.approx(1) and weights[3:].mean() == pytest.approx(1)
    with pytest.raises(ValueError, match="negative or non-finite"):
        training_weights(df, {}, "trk_pt - 5", "trk_originalAlgo", [4, 22])


def test_weights_change_the_loss_as_computed_by_hand():
    import keras
    import tensorflow as tf

    from network.data import TrackData, Trainer

    rng = np.random.default_rng(0)
    n = 64
    features = rng.normal(size=(n, 3)).astype(np.float32)
    labels = (features[:, 0] > 0).astype(np.float32)
    weights = rng.uniform(0.1, 3.0, n).astype(np.float32)
    inputs = keras.Input((3,), name="x")
    network = keras.Model({"x": inputs}, keras.layers.Dense(1, activation="sigmoid")(inputs))
    strategy = tf.distribute.get_strategy()
    losses = {}
    for name, w in (("weighted", weights), ("plain", None)):
        data = TrackData(features, None, labels, w, n // 2, strategy, n, seed=1)
        trainer = Trainer(network, data)
        trainer.compile(loss="binary_crossentropy")
        trainer.build_for(np.arange(4))
        rows = tf.range(n, dtype=tf.int64)
        batch = data._with_targets(rows)
        losses[name] = float(trainer.compute_loss(batch[0], batch[1], trainer(rows), *batch[2:]))
    p = np.clip(network.predict({"x": features}, verbose=0).ravel(), 1e-7, 1 - 1e-7)
    per_track = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert losses["weighted"] == pytest.approx(np.sum(weights * per_track) / n, rel=1e-5)
    assert losses["plain"] == pytest.approx(per_track.mean(), rel=1e-5)
    assert losses["weighted"] != pytest.approx(losses["plain"], rel=1e-3)
