"""Train the track classifier on the balanced splits, under a tf.distribute strategy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from network.custom.input_sanitizer import fit_sanitizer_bounds, transforms_for_features
from network.model import build_model_from_config

LABEL = "trk_isTrue"


def model_inputs(df: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """The two inputs CMSSW feeds: x = the 29 raw features, y = originalAlgo as a float."""
    return {
        "x": df[cfg["features"]].to_numpy(np.float32),
        "y": df[cfg["algo_branch"]].to_numpy(np.float32).reshape(-1, 1),
    }


def make_dataset(
    inputs: dict[str, np.ndarray],
    labels: np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    replicas: int = 1,
) -> tf.data.Dataset:
    """Batches gathered from the in-memory arrays, reshuffled every epoch.

    A generator of batch slices instead of from_tensor_slices: the arrays are not copied into
    the graph (that would double the memory of O(100M) tracks). Every batch splits evenly over
    the replicas (Keras' multi-replica steps fail on uneven shards), so up to replicas - 1
    tracks of an epoch are left out: other ones at every epoch when shuffled.
    """
    n = len(labels) - len(labels) % replicas
    n_features = inputs["x"].shape[1]
    labels = labels.astype(np.float32).reshape(-1, 1)
    epoch = [0]

    def batches():
        order = np.arange(len(labels))
        if shuffle:
            np.random.default_rng([seed, epoch[0]]).shuffle(order)
            epoch[0] += 1
        order = order[:n]
        for start in range(0, n, batch_size):
            rows = np.sort(order[start : start + batch_size])  # sorted rows gather faster
            yield {"x": inputs["x"][rows], "y": inputs["y"][rows]}, labels[rows]

    signature = (
        {
            "x": tf.TensorSpec([None, n_features], tf.float32),
            "y": tf.TensorSpec([None, 1], tf.float32),
        },
        tf.TensorSpec([None, 1], tf.float32),
    )
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    n_batches = -(-n // batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(2)


class Checkpoints(keras.callbacks.Callback):
    """Keep the best model by validation loss as model.keras, and a copy every N epochs.

    Each file is written under a temporary name and renamed, so an interrupted run never leaves
    a half-written model behind.
    """

    def __init__(self, run_dir: Path, every: int) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.every = every
        self.best = np.inf

    def _save(self, path: Path) -> None:
        tmp = path.with_name(f"{path.stem}.tmp.keras")
        self.model.save(tmp)
        os.replace(tmp, path)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        val_loss = (logs or {}).get("val_loss", np.inf)
        if val_loss < self.best:
            self.best = val_loss
            self._save(self.run_dir / "model.keras")
        if self.every and (epoch + 1) % self.every == 0:
            (self.run_dir / "checkpoints").mkdir(exist_ok=True)
            self._save(self.run_dir / "checkpoints" / f"epoch_{epoch + 1:03d}.keras")


def train_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    cfg: dict[str, Any],
    strategy: tf.distribute.Strategy,
    run_dir: Path,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> tuple[keras.Model, float]:
    """Fit the sanitizer bounds, build the model under the strategy, train it.

    Returns the model with the weights of its best epoch (lowest validation loss) and its AUC
    on the validation split. Writes model.keras, checkpoints/, training_log.csv and
    tensorboard/ into run_dir.
    """
    keras.utils.set_random_seed(cfg["seed"])
    train_inputs, val_inputs = model_inputs(train, cfg), model_inputs(validation, cfg)
    train_labels, val_labels = train[LABEL].to_numpy(), validation[LABEL].to_numpy()
    if len(np.unique(train_labels)) < 2 or len(validation) == 0:
        raise ValueError(
            "The training split needs true and fake tracks and the validation split tracks: "
            "add events to the training samples or change split_fractions."
        )

    lower, upper = fit_sanitizer_bounds(
        train_inputs["x"],
        transforms_for_features(cfg["features"], cfg["feature_transforms"]),
        quantile=cfg["sanitizer_quantile"],
        max_tracks=cfg["sanitizer_fit_tracks"],
        seed=cfg["seed"],
    )
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg["batch_size"] * replicas
    steps_per_epoch = -(-len(train) // global_batch)
    print(
        f"{len(train)} training and {len(validation)} validation tracks; "
        f"{replicas} replica(s) x {cfg['batch_size']} = global batch {global_batch}"
    )

    with strategy.scope():
        model = build_model_from_config(cfg, lower, upper)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate_schedule(cfg, steps_per_epoch)),
            loss="binary_crossentropy",
            metrics=[keras.metrics.AUC(name="auc"), "accuracy"],
        )
    layers = "-".join(str(width) for width in cfg["hidden_layers"])
    print(
        f"Model: {model.count_params():,} parameters; hidden layers {layers}, {cfg['activation']}"
        f"{', batch norm' if cfg['batch_norm'] else ''}, dropout {cfg['dropout']}, L2 {cfg['l2']}"
    )

    run_dir = Path(run_dir)
    callbacks = [
        *(callbacks or []),
        Checkpoints(run_dir, cfg["checkpoint_every"]),
        keras.callbacks.CSVLogger(str(run_dir / "training_log.csv")),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")),
    ]
    if cfg["early_stopping_patience"] > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                patience=cfg["early_stopping_patience"], restore_best_weights=True, verbose=1
            )
        )
    if cfg["lr_schedule"] == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=3, min_lr=1e-6, verbose=1)
        )
    model.fit(
        make_dataset(
            train_inputs, train_labels, global_batch, True, cfg["seed"], replicas=replicas
        ),
        validation_data=make_dataset(val_inputs, val_labels, global_batch, replicas=replicas),
        epochs=cfg["epochs"],
        callbacks=callbacks,
        shuffle=False,  # the dataset reshuffles itself every epoch
        verbose=2,  # one line per epoch: readable in a terminal and in a batch job's log
    )
    # Early stopping may not have fired: make sure the returned weights are the best epoch's.
    # The reloaded copy lives outside the strategy, so predicting with it needs no even shards.
    best = keras.models.load_model(run_dir / "model.keras")
    model.set_weights(best.get_weights())
    scores = best.predict(val_inputs, batch_size=global_batch, verbose=0).ravel()
    return model, float(roc_auc_score(val_labels, scores))


def learning_rate_schedule(cfg: dict[str, Any], steps_per_epoch: int) -> float | Any:
    """The optimizer's learning rate: a constant, or a cosine decay over the whole training."""
    schedule = cfg["lr_schedule"]
    if schedule in ("constant", "plateau"):
        return cfg["learning_rate"]
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            cfg["learning_rate"], decay_steps=max(1, cfg["epochs"] * steps_per_epoch), alpha=0.01
        )
    raise ValueError(
        f"lr_schedule = {schedule!r} in config.py: use 'constant', 'cosine' or 'plateau'."
    )
