"""One-hot encoding of the track's originalAlgo, inside the graph.

CMSSW's TrackTfClassifier sends originalAlgo() as a float32 [N, 1] tensor named "y". The width
is every reco::TrackBase::TrackAlgorithm value 0..45 by default: the older framework used 25
columns and so silently encoded displacedRegionalStep (26) as all zeros.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from cmssw.ntuple import ALGO_DEPTH


@keras.saving.register_keras_serializable(package="track_dnn")
class OneHotLayer(keras.layers.Layer):
    """float [N, 1] algorithm number -> float32 [N, depth] one-hot.

    The value is rounded to the nearest integer; anything outside [0, depth), NaN included,
    gives an all-zero row.
    """

    def __init__(self, depth: int = ALGO_DEPTH, **kwargs) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(
                f"one-hot depth (algo_depth) must be a positive integer, got {depth!r}"
            )
        self.depth = depth

    def call(self, inputs):
        algo = tf.reshape(tf.cast(inputs, tf.float32), [-1])
        # -1 is out of range, so NaN becomes a zero row; clamping first keeps the int32 cast
        # defined for huge values (a float -> int cast out of range is undefined behaviour).
        algo = tf.where(tf.math.is_nan(algo), -1.0, algo)
        algo = tf.minimum(tf.maximum(algo, -1.0), float(self.depth))
        index = tf.cast(tf.round(algo), tf.int32)
        return tf.one_hot(index, self.depth, on_value=1.0, off_value=0.0, dtype=tf.float32)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.depth)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(depth=self.depth)
        return config
