"""Train the track classifier on the balanced splits, under a tf.distribute strategy.

    result = train_model(train, validation, cfg, strategy, run_dir)

The run folder gets model.keras (the best epoch by validation loss), checkpoints/,
training_log.csv, tensorboard/ and training_state/ (what --resume continues from). A training
stopped by SIGINT or SIGTERM saves its state at the next batch boundary and raises
TrainingInterrupted; called again on the same run folder, train_model continues from there, and
with `deterministic` the logs are those of a training that never stopped.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from cmssw.ntuple import LABEL
from network.checkpointing import (
    BestModel,
    PeriodicModel,
    StopRequest,
    TrainingInterrupted,
    TrainingState,
    sync_logs,
)
from network.custom.input_sanitizer import fit_sanitizer_bounds, transforms_for_features
from network.custom.linear_scaling import fit_linear_scaling
from network.data import TrackData, Trainer, predict
from network.inputs import feature_matrix
from network.model import build_lwtnn_model_from_config, build_model_from_config
from pipeline.console import is_terminal

__all__ = ["TrainingInterrupted", "TrainingResult", "train_model"]

# Training steps per call into TensorFlow: less Python per batch. One under a multi-device
# strategy, where several fail in Keras 3.15 with TensorFlow 2.21 ("You must feed a value for
# placeholder tensor ... while/cond/Placeholder_1"), even with a plain batched dataset.
STEPS_PER_EXECUTION = 32


@dataclass
class TrainingResult:
    model: keras.Model  # with the weights of the best epoch
    validation_auc: float
    epochs: int  # epochs trained, in all sessions
    resumed_from: tuple[int, int] | None = None  # (epoch, batch) this session started at
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    input_bytes_per_track: float = 0.0  # what the training holds per track on its device(s)
    weights_sha256: str = ""  # of the final weights: equal on every worker, run to run


def train_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    cfg: dict[str, Any],
    strategy: tf.distribute.Strategy,
    run_dir: Path,
    callbacks: list[keras.callbacks.Callback] | None = None,
    weights: np.ndarray | None = None,
) -> TrainingResult:
    """Fit the model's preprocessing (the sanitizer's bounds, or lwtnn's offset and scale),
    build the model under the strategy, train it (or continue the training saved in run_dir).
    weights: per training then validation track, or None."""
    run_dir = Path(run_dir)
    keras.utils.set_random_seed(cfg["seed"])
    if cfg["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    if train[LABEL].nunique() < 2 or len(validation) == 0:
        raise ValueError(
            "The training split needs true and fake tracks and the validation split tracks: "
            "add events to the training samples or change split_fractions."
        )
    if cfg.get("deploy_target") == "lwtnn":
        _check_finite_validation(validation, cfg["features"])
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg["batch_size"] * replicas
    trainer, data = _build(train, validation, cfg, strategy, global_batch, weights)
    print(
        f"{len(train)} training and {len(validation)} validation tracks; {replicas} replica(s) "
        f"x {cfg['batch_size']} = global batch {global_batch}; "
        f"{trainer.network.count_params():,} parameters; inputs {data.bytes_per_track:.0f} B/track"
        f" on {data.device}"
    )

    stop = StopRequest()
    deciders = _deciders(cfg, run_dir)
    state = TrainingState(run_dir, stop, deciders)
    state.restore(trainer)
    start = (state.state["epoch"], state.state["batch"])
    resumed = state.resumed
    if resumed:
        print(f"Resuming the training at epoch {start[0] + 1}, batch {start[1]}")
    sync_logs(run_dir, state.state["history"])
    every = cfg["checkpoint_every"]
    callbacks = [
        *deciders,
        *([PeriodicModel(run_dir / "checkpoints", every)] if every else []),
        state,  # after the deciders (it saves their state), before the loggers
        keras.callbacks.CSVLogger(str(run_dir / "training_log.csv"), append=True),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")),
        *(callbacks or []),
        EpochProgress(cfg["epochs"]),
    ]
    with stop.installed():
        _fit_epochs(trainer, data, state, callbacks, start, cfg["epochs"])
    state.mark_finished()
    trainer.network.set_weights(_best_weights(deciders[0], state, run_dir))
    rows = tf.range(data.n_train, data.n_train + data.n_validation)
    scores = predict(trainer.network, data.inputs(rows))
    return TrainingResult(
        model=trainer.network,
        validation_auc=float(roc_auc_score(validation[LABEL].to_numpy(), scores)),
        epochs=len(state.state["history"]),
        resumed_from=start if resumed else None,
        stopped_early=bool(state.state.get("stopped_early")),
        history=state.state["history"],
        input_bytes_per_track=data.bytes_per_track,
        weights_sha256=weights_digest(trainer.network),
    )


def _fit_epochs(
    trainer: Trainer,
    data: TrackData,
    state: TrainingState,
    callbacks: list[keras.callbacks.Callback],
    start: tuple[int, int],
    epochs: int,
) -> None:
    """One fit per epoch from (epoch, batch) = start: each epoch's dataset ends with the epoch
    (see TrackData), so a resumed epoch ends where it should."""
    fit = {
        "validation_data": data.validation_batches(),
        "callbacks": callbacks,
        "verbose": 1 if is_terminal(sys.stdout) else 2,  # a bar on a terminal, lines in a log
    }
    epoch, batch = start
    finished = state.state.get("finished") or state.state.get("stopped_early")
    while epoch < epochs and not finished:
        state.first_batch = batch
        trainer.fit(
            data.training_batches(epoch, batch), initial_epoch=epoch, epochs=epoch + 1, **fit
        )
        epoch, batch = epoch + 1, 0
        finished = trainer.stop_training  # early stopping


def _best_weights(best: BestModel, state: TrainingState, run_dir: Path) -> list[np.ndarray]:
    """The best model's weights: kept in memory, or on disk when this session trained nothing."""
    if best.best_weights is not None:
        return best.best_weights
    if not (run_dir / "model.keras").exists():
        raise RuntimeError(
            f"no epoch of {len(state.state['history'])} had a finite validation loss, so there "
            "is no best model: the training diverged (lower learning_rate) or the validation "
            f"tracks or weights hold NaN; {run_dir / 'training_log.csv'} has the losses"
        )
    return keras.models.load_model(run_dir / "model.keras", compile=False).get_weights()


def weights_digest(model: keras.Model) -> str:
    """sha256 of every weight of the model, in order: the same training gives the same."""
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class EpochProgress(keras.callbacks.ProgbarLogger):
    """Keras' progress bar (or line per epoch), counting the epochs of the whole training
    while fit runs one epoch at a time."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.total_epochs = epochs

    def set_params(self, params: dict) -> None:
        super().set_params(params)
        self.epochs = self.total_epochs


def _build(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    cfg: dict[str, Any],
    strategy: tf.distribute.Strategy,
    global_batch: int,
    weights: np.ndarray | None,
) -> tuple[Trainer, TrackData]:
    features = feature_matrix((train, validation), cfg["features"])
    network = build_network(features[: len(train)], cfg)
    lwtnn = cfg.get("deploy_target") == "lwtnn"  # lwtnn feeds trk_algo among x, no y
    data = TrackData(
        features,
        None if lwtnn else feature_matrix((train, validation), [cfg["algo_branch"]]),
        np.concatenate([train[LABEL].to_numpy(), validation[LABEL].to_numpy()]),
        weights,
        len(train),
        strategy,
        global_batch,
        cfg["seed"],
    )
    del features  # the TrackData holds the only copy now
    with strategy.scope():
        trainer = Trainer(network(), data)
        trainer.compile(
            optimizer=keras.optimizers.Adam(learning_rate_schedule(cfg, data.steps_per_epoch)),
            loss="binary_crossentropy",  # weighted by the sample weights, when given
            metrics=[keras.metrics.AUC(name="auc")],
            weighted_metrics=None if weights is None else [keras.metrics.AUC(name="weighted_auc")],
            steps_per_execution=1 if data.replicas > 1 else STEPS_PER_EXECUTION,
        )
        trainer.build_for(np.arange(min(4, len(train))))
    return trainer, data


def build_network(x_train: np.ndarray, cfg: dict[str, Any]) -> Any:
    """A function that builds the model (under the strategy's scope), with its preprocessing
    fitted on the training tracks: the sanitizer's bounds, or lwtnn's linear offset/scale."""
    if cfg.get("deploy_target") == "lwtnn":
        offset, scale, lower, upper = fit_linear_scaling(
            x_train,
            cfg["lwtnn_scale_quantile"],
            cfg["sanitizer_fit_tracks"],
            cfg["seed"],
            clip_quantile=cfg["sanitizer_quantile"],
        )
        return lambda: build_lwtnn_model_from_config(cfg, offset, scale, lower, upper)
    lower, upper = fit_sanitizer_bounds(
        x_train,
        transforms_for_features(cfg["features"], cfg["feature_transforms"]),
        quantile=cfg["sanitizer_quantile"],
        max_tracks=cfg["sanitizer_fit_tracks"],
        seed=cfg["seed"],
    )
    return lambda: build_model_from_config(cfg, lower, upper)


def _deciders(cfg: dict[str, Any], run_dir: Path) -> list[keras.callbacks.Callback]:
    """The callbacks whose state decides the training: the best model first."""
    deciders: list[keras.callbacks.Callback] = [BestModel(run_dir / "model.keras")]
    if cfg["early_stopping_patience"] > 0:
        deciders.append(
            # The best weights are BestModel's: EarlyStopping would restore them at the end of
            # every fit, i.e. of every epoch here.
            keras.callbacks.EarlyStopping(patience=cfg["early_stopping_patience"], verbose=1)
        )
    if cfg["lr_schedule"] == "plateau":
        deciders.append(
            keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=3, min_lr=1e-6, verbose=1)
        )
    return deciders


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


def _check_finite_validation(validation: pd.DataFrame, features: list[str]) -> None:
    """The lwtnn model has no NaN handling at inference (CMSSW's cannot have any): a validation
    track with a NaN input would make every validation loss NaN."""
    values = validation[features].to_numpy(dtype=np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        columns = [name for name, b in zip(features, bad.any(axis=0), strict=True) if b]
        raise ValueError(
            f"{int(bad.any(axis=1).sum())} validation tracks have a NaN or infinite input "
            f"({', '.join(columns)}): the lwtnn model scores them NaN, and so every validation "
            "loss. Fix: leave them out first, helper_functions.finite_inputs(tracks, features), "
            "as main.py does."
        )
