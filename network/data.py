"""The tracks the model trains on, placed once where it trains, and fed as row numbers.

A Python generator that slices batches out of NumPy arrays costs the training its throughput
(the input pipeline, not the model, sets the pace on a CPU and more so on a GPU). Here the
features of the training and validation tracks are one float32 matrix put on the training
device(s) once: a tensor that shares the NumPy array's memory on the CPU, a copy on each GPU
(a mirrored variable under a multi-device strategy). The tf.data pipeline produces only the
row numbers of each batch, shuffled on the fly with a stateless index permutation seeded by
(seed, epoch), with their labels and weights; the model gathers its inputs from the matrix.
So an epoch's order is a pure function of (seed, epoch): a resumed training sees exactly the
batches an uninterrupted one would.

    data = TrackData(features, algo, labels, weights, n_train, strategy, global_batch, seed)
    trainer = Trainer(network, data)
    trainer.fit(data.training_batches(epoch), initial_epoch=epoch, epochs=epoch + 1, ...)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from network.inputs import aligned_empty
from pipeline.files import atomic_path


class TrackData:
    """Training and validation tracks on the device, and the datasets of their row numbers.

    Rows 0..n_train-1 are the training tracks, then the validation tracks. Every batch splits
    evenly over the replicas, so up to replicas - 1 training tracks sit out each epoch (other
    ones each epoch) and as many validation tracks always.
    """

    def __init__(
        self,
        features: np.ndarray,
        algo: np.ndarray | None,
        labels: np.ndarray,
        weights: np.ndarray | None,
        n_train: int,
        strategy: tf.distribute.Strategy,
        global_batch: int,
        seed: int,
    ) -> None:
        self.n_train = int(n_train)
        self.n_validation = len(labels) - self.n_train
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = int(global_batch)
        self.seed = int(seed)
        self.used_train = self.n_train - self.n_train % self.replicas
        self.used_validation = self.n_validation - self.n_validation % self.replicas
        self.steps_per_epoch = -(-self.used_train // self.global_batch)
        self.validation_steps = -(-self.used_validation // self.global_batch)
        self.features = _place(features, strategy)
        self.algo = None if algo is None else _place(algo, strategy)  # None: the model has no y
        self.device = getattr(self.features, "device", "")
        if strategy.num_replicas_in_sync > 1:
            self.device = f"{self.replicas} devices ({self.device} and the others)"
        # Labels and weights travel with the row numbers: 4 bytes per track each.
        self.labels = tf.constant(labels.astype(np.float32).reshape(-1, 1))
        self.weights = None if weights is None else tf.constant(weights.astype(np.float32))

    @property
    def bytes_per_track(self) -> float:
        """Bytes this object holds per training or validation track (one device copy)."""
        arrays = [t for t in (self.features, self.algo, self.labels) if t is not None]
        total = sum(int(np.prod(t.shape)) * 4 for t in arrays)
        if self.weights is not None:
            total += int(self.weights.shape[0]) * 4
        return total / max(1, self.n_train + self.n_validation)

    def inputs(self, rows: tf.Tensor) -> dict[str, tf.Tensor]:
        """The model inputs x (and y) of these rows."""
        if self.algo is None:
            return {"x": tf.gather(self.features, rows)}
        return {"x": tf.gather(self.features, rows), "y": tf.gather(self.algo, rows)}

    def _with_targets(self, rows: tf.Tensor) -> tuple:
        labels = tf.gather(self.labels, rows)
        if self.weights is None:
            return rows, labels
        return rows, labels, tf.gather(self.weights, rows)

    def training_batches(self, epoch: int, first_batch: int = 0) -> tf.data.Dataset:
        """The batches of one epoch from first_batch on: row numbers in the order of the
        permutation of (seed, epoch). A finite dataset: Keras' multi-step executions end
        exactly with the epoch."""
        size, used = self.global_batch, self.used_train
        seed = tf.constant([self.seed, epoch], tf.int64)
        last_index = max(0, self.n_train - 1)

        def rows_of(batch: tf.Tensor) -> tuple:
            positions = tf.range(batch * size, tf.minimum((batch + 1) * size, used))
            rows = tf.random.experimental.index_shuffle(positions, seed, max_index=last_index)
            return self._with_targets(rows)

        dataset = tf.data.Dataset.range(first_batch, self.steps_per_epoch).map(rows_of)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def validation_batches(self) -> tf.data.Dataset:
        """The validation rows in order, one pass."""
        size, used, offset = self.global_batch, self.used_validation, self.n_train

        def rows_of(batch: tf.Tensor) -> tuple:
            rows = tf.range(batch * size, tf.minimum((batch + 1) * size, used)) + offset
            return self._with_targets(rows)

        return tf.data.Dataset.range(self.validation_steps).map(rows_of).prefetch(2)


def _place(array: np.ndarray, strategy: tf.distribute.Strategy) -> tf.Tensor | tf.Variable:
    """The array where the replicas read it: on several devices a mirrored variable (a copy on
    each), on a GPU a copy there when it fits (else it stays in host memory), on the CPU a
    tensor sharing the array's memory (DLPack: no copy; the array must be 64-byte aligned, see
    aligned_empty)."""
    if not array.flags.c_contiguous or array.ctypes.data % 64:
        aligned = aligned_empty(array.shape, array.dtype)
        aligned[...] = array
        array = aligned
    host = tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    if strategy.num_replicas_in_sync > 1:
        with strategy.scope():
            return tf.Variable(host, trainable=False)
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        try:
            with tf.device(gpus[0].name):
                return tf.identity(host)
        except tf.errors.ResourceExhaustedError:
            print(f"note: {array.nbytes / 1e9:.1f} GB of tracks do not fit on {gpus[0].name}; "
                  "the batches are gathered in host memory")  # fmt: skip
    return host


class Trainer(keras.Model):
    """Trains `network` on row numbers of `data`; saving it saves `network`.

    Its input is either row numbers (int) of the TrackData, whose inputs it gathers, or the
    network's own inputs {"x", "y"}. Keras' fit, evaluate, predict and callbacks work on it
    unchanged; ModelCheckpoint's saves land atomically and hold the plain network.
    """

    def __init__(self, network: keras.Model, data: TrackData | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.network = network
        self.data = data
        self._convert_input_args = False  # row numbers stay integers

    def call(self, inputs: Any, training: bool = False) -> tf.Tensor:
        if isinstance(inputs, dict):
            return self.network(inputs, training=training)
        return self.network(self.data.inputs(inputs), training=training)

    def save(self, filepath: str | os.PathLike, overwrite: bool = True, **kwargs: Any) -> None:
        """Save the network (not this wrapper) under a temporary name, then rename."""
        path = Path(filepath)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, ".keras") as tmp:
            self.network.save(tmp, **kwargs)

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # Keras peeks at a batch to build the model symbolically, and under a multi-worker
        # strategy averages the batch over the workers first, which fails for integer row
        # numbers. build_for has built everything already: nothing to do.
        if self.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator, data_batch)

    def train_step(self, data: Any) -> dict[str, Any]:
        return _vector_logs(super().train_step(data), self.distribute_strategy)

    def test_step(self, data: Any) -> dict[str, Any]:
        return _vector_logs(super().test_step(data), self.distribute_strategy)

    def build_for(self, rows: np.ndarray) -> None:
        """Create every variable (model, compiled loss and metrics) with a few real rows, so that
        fit needs no symbolic build (which cannot handle integer row inputs)."""
        rows = tf.constant(rows, tf.int64)
        labels = tf.gather(self.data.labels, rows)
        weights = None if self.data.weights is None else tf.gather(self.data.weights, rows)
        predicted = self(rows)
        self.compute_loss(rows, labels, predicted, weights)
        self.compute_metrics(rows, labels, predicted, weights)
        self.reset_metrics()
        self.optimizer.build(self.trainable_variables)


def predict(network: keras.Model, inputs: dict[str, Any], chunk: int = 65_536) -> np.ndarray:
    """The network's output p for its inputs {"x", "y"} (lwtnn: {"x"}; arrays or tensors),
    called eagerly chunk by chunk: no predict function to trace, so cheap to call now and then
    during a training."""
    network = getattr(network, "network", network)  # a Trainer: its network
    n = int(inputs["x"].shape[0])
    parts = [
        keras.ops.convert_to_numpy(
            network({k: v[start : start + chunk] for k, v in inputs.items()}, training=False)
        )
        for start in range(0, n, chunk)
    ]
    return np.concatenate(parts).ravel() if parts else np.zeros(0, dtype=np.float32)


def _vector_logs(logs: dict[str, Any], strategy: tf.distribute.Strategy) -> dict[str, Any]:
    """Under a multi-worker strategy, Keras averages each log over the workers with
    reduce(..., axis=0), which fails on a scalar: give it a vector of one value."""
    if strategy.extended._in_multi_worker_mode():  # noqa: SLF001 (TensorFlow's only test of it)
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}
    return logs
