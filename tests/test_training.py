"""train_model at its edges: lwtnn validation tracks with a NaN input are refused before any
work; a training with no finite validation loss ends with an error that says why; callbacks
whose best is still infinite come back as numbers when the training state is restored."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from cmssw.ntuple import ALGORITHMS, LABEL
from pipeline.settings import load_config

SETTINGS = ["--epochs", "2", "--batch_size", "64", "--hidden_layers", "[8]",
            "--checkpoint_every", "0", "--early_stopping_patience", "5"]  # fmt: skip


def toy_tracks(cfg: dict, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    columns = {
        name: (rng.normal(size=n) + label * (k % 3 == 0)).astype(np.float32)
        for k, name in enumerate(cfg["features"])
    }
    algos = [ALGORITHMS[name] for name in cfg["iterations"][:3]]
    return pd.DataFrame(
        {
            **columns,
            cfg["algo_branch"]: rng.choice(algos, n).astype(np.uint8),
            LABEL: label.astype(np.int8),
            "event_index": np.arange(n, dtype=np.uint32) // 10,
            "sample": pd.Categorical(["toy"] * n),
        }
    )


def test_lwtnn_validation_tracks_with_a_nan_input_are_refused_before_training(tmp_path):
    from network.training import train_model

    cfg, _ = load_config(["--deploy_target", "lwtnn", *SETTINGS])
    train, validation = toy_tracks(cfg, 600, 1), toy_tracks(cfg, 200, 2)
    validation.loc[5, "trk_dxyErr"] = np.nan
    with pytest.raises(ValueError, match=r"1 validation tracks .*\(trk_dxyErr\).*finite_inputs"):
        train_model(train, validation, cfg, tf.distribute.get_strategy(), tmp_path)
    assert not (tmp_path / "training_log.csv").exists()  # refused before any epoch


def test_no_finite_validation_loss_ends_with_an_error_that_says_why(tmp_path):
    from network.training import train_model

    cfg, _ = load_config(SETTINGS)
    train, validation = toy_tracks(cfg, 600, 1), toy_tracks(cfg, 200, 2)
    weights = np.ones(len(train) + len(validation), dtype=np.float32)
    weights[len(train)] = np.nan  # one validation track: every validation loss is NaN
    with pytest.raises(RuntimeError, match="no epoch of 2 had a finite validation loss"):
        train_model(train, validation, cfg, tf.distribute.get_strategy(), tmp_path,
                    weights=weights)  # fmt: skip
    log = pd.read_csv(tmp_path / "training_log.csv")
    assert len(log) == 2 and log["val_loss"].isna().all() and np.isfinite(log["loss"]).all()


def test_a_nan_best_is_restored_as_a_number_and_a_nan_loss_is_never_the_best(tmp_path):
    import keras

    from network.checkpointing import BestModel, StopRequest, TrainingState

    inputs = keras.Input((2,), name="x")
    model = keras.Model({"x": inputs}, keras.layers.Dense(1)(inputs))
    best, stopping = BestModel(tmp_path / "model.keras"), keras.callbacks.EarlyStopping(patience=5)
    state = TrainingState(tmp_path, StopRequest(), [best, stopping])
    for callback in (best, stopping, state):
        callback.set_model(model)
    nan_epoch = {"val_loss": float("nan")}
    best.on_epoch_end(0, nan_epoch)
    stopping.on_epoch_end(0, nan_epoch)  # Keras takes a first NaN as its best
    state.save(1, 0)
    assert best.best is None and not (tmp_path / "model.keras").exists()

    best, stopping = BestModel(tmp_path / "model.keras"), keras.callbacks.EarlyStopping(patience=5)
    TrainingState(tmp_path, StopRequest(), [best, stopping]).on_train_begin()
    assert isinstance(stopping.best, float) and np.isnan(stopping.best)  # JSON's "nan", a number
    for callback in (best, stopping):
        callback.set_model(model)
        callback.on_epoch_end(1, {"val_loss": 0.5})  # compares with the restored best
    assert best.best == 0.5 and (tmp_path / "model.keras").exists()


def test_the_monitor_counts_a_nan_score_as_passing_no_cut(tmp_path):
    """An lwtnn model gives NaN for a NaN input, as CMSSW would; the monitor's AUC must still
    come out, with that track below every cut."""
    import keras

    from evaluation import MonitorCallback
    from evaluation.metrics import NO_CUT_SCORE, below_every_cut, pass_fraction
    from evaluation.names import NEW

    cfg, _ = load_config(SETTINGS)
    x = keras.Input((len(cfg["features"]),), name="x")
    y = keras.Input((1,), name="y")
    output = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Concatenate()([x, y]))
    model = keras.Model({"x": x, "y": y}, output)
    tracks = toy_tracks(cfg, 400, 3)
    tracks.loc[7, "trk_pt"] = np.nan
    monitor = MonitorCallback({"toy": tracks}, cfg, tmp_path, every=1)
    monitor.set_model(model)
    aucs = monitor.monitor(1)
    assert np.isfinite(aucs["toy"])
    log = pd.read_csv(tmp_path / "monitor" / "monitor_log.csv")
    assert log[f"auc_{NEW}"].notna().all()
    cleaned = below_every_cut(np.array([0.5, np.nan, -np.inf]))
    assert cleaned[0] == 0.5 and (cleaned[1:] == NO_CUT_SCORE).all()
    assert pass_fraction(cleaned[1:], -1.0) == 0.0  # below the lowest cut a sigmoid allows
