"""The only preprocessing lwtnn can express: (x + offset) * scale per input, fixed.

The lwtnn variant of the model (network.model.build_lwtnn_model) starts with this layer, so
the exported lwtnn_network.json carries offset and scale as its inputs' "offset" and "scale"
and CMSSW's TrackLwtnnClassifier computes exactly what Keras predicts.

lwtnn cannot clip, so at inference pathological values (pt of 4e6 GeV, ptErr of 6e11) reach
the network as they are, and so they do in Keras' predictions. In training they would set the
batch-norm statistics and the gradients of whole batches; so, in training only, the layer
first replaces NaN by the median and clips each input to its training bounds (the same
quantile rule as the sanitizer's). At inference it is exactly (x + offset) * scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np


def fit_linear_scaling(
    x: np.ndarray,
    quantile: float = 0.05,
    max_tracks: int = 1_000_000,
    seed: int = 0,
    clip_quantile: float = 0.001,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """offset, scale, lower, upper per column (float32 [n_features]) from training tracks,
    robust to outliers. lower/upper are the training-only clip bounds of the raw values: the
    clip_quantile and 1 - clip_quantile quantiles (the sanitizer's rule).

    Rule: on a random subsample of at most `max_tracks` rows (seeded), per column, drop the
    non-finite values; offset = -median; scale = 2 / (q(1 - quantile) - q(quantile)), so the
    central 1 - 2 * quantile of the tracks spans about [-1, 1]. A column whose central range
    is empty (a mostly constant count) uses its full finite range instead; a constant or
    all-non-finite column gets scale 1 (and offset -median, or 0).

    Why not mean and standard deviation: real tracks hold extremes (pt of 4e6 GeV, dz of
    -99999 for "no vertex") that would set both; quantiles ignore them. lwtnn cannot clip, so
    such tracks still reach the network with large values: it learns what they look like.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [tracks, features], got shape {x.shape}")
    if not 0.0 < quantile < 0.5:
        raise ValueError(f"the scaling quantile must be in (0, 0.5), got {quantile}")
    if max_tracks < 1:
        raise ValueError(f"max_tracks must be positive, got {max_tracks}")
    if not 0.0 <= clip_quantile < quantile:
        raise ValueError(f"clip_quantile must be in [0, {quantile}), got {clip_quantile}")
    if len(x) > max_tracks:
        rows = np.sort(np.random.default_rng(seed).choice(len(x), max_tracks, replace=False))
        x = x[rows]
    offset = np.zeros(x.shape[1], dtype=np.float64)
    scale = np.ones(x.shape[1], dtype=np.float64)
    lower, upper = np.zeros_like(offset), np.zeros_like(offset)
    for j in range(x.shape[1]):
        column = x[:, j].astype(np.float64)
        column = column[np.isfinite(column)]
        if column.size == 0:
            continue
        levels = [clip_quantile, quantile, 0.5, 1.0 - quantile, 1.0 - clip_quantile]
        lower[j], low, median, high, upper[j] = np.quantile(column, levels)
        offset[j] = -median
        width = high - low
        if width <= 0:
            width = column.max() - column.min()
        if width > 0:
            scale[j] = 2.0 / width
    return tuple(a.astype(np.float32) for a in (offset, scale, lower, upper))


def _as_vector(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or not np.all(np.isfinite(array)):
        raise ValueError(f"`{what}` must be a finite 1-D vector, got {array.tolist()}")
    return array.astype(np.float32)


@keras.saving.register_keras_serializable(package="track_dnn")
class LinearScalingLayer(keras.layers.Layer):
    """(x + offset) * scale per column, with fixed (non-trainable) offset and scale.

    In training only (training=True), NaN first becomes the median (-offset) and every value is
    clipped to [lower, upper] (no clipping where those are not given). At inference NaN and
    ±inf pass through, as lwtnn passes them.
    """

    def __init__(
        self,
        offset: Sequence[float] | np.ndarray,
        scale: Sequence[float] | np.ndarray,
        lower: Sequence[float] | np.ndarray | None = None,
        upper: Sequence[float] | np.ndarray | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        offset_values = _as_vector(offset, "offset")
        scale_values = _as_vector(scale, "scale")
        n = offset_values.size
        lower_values = (
            np.full(n, -np.inf, np.float32) if lower is None else _as_vector(lower, "lower")
        )
        upper_values = (
            np.full(n, np.inf, np.float32) if upper is None else _as_vector(upper, "upper")
        )
        shapes = {v.shape for v in (offset_values, scale_values, lower_values, upper_values)}
        if len(shapes) != 1:
            raise ValueError(f"offset, scale, lower and upper differ in length: {sorted(shapes)}")
        if np.any(lower_values > upper_values):
            raise ValueError("LinearScalingLayer: lower > upper in some column")
        # Training bounds are constants of training, not weights: lwtnn never sees them.
        self.lower, self.upper = lower_values, upper_values
        self.offset = self.add_weight(
            name="offset",
            shape=offset_values.shape,
            initializer=keras.initializers.Constant(offset_values),
            trainable=False,
            dtype="float32",
        )
        self.scale = self.add_weight(
            name="scale",
            shape=scale_values.shape,
            initializer=keras.initializers.Constant(scale_values),
            trainable=False,
            dtype="float32",
        )

    def build(self, input_shape) -> None:
        if input_shape[-1] is not None and input_shape[-1] != self.offset.shape[0]:
            raise ValueError(
                f"LinearScalingLayer has {self.offset.shape[0]} offsets but the input has "
                f"{input_shape[-1]} columns"
            )

    def call(self, inputs, training=None):
        x = keras.ops.cast(inputs, "float32")
        if training:
            x = keras.ops.where(keras.ops.isnan(x), -self.offset, x)
            x = keras.ops.clip(x, self.lower, self.upper)
        return (x + self.offset) * self.scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            offset=keras.ops.convert_to_numpy(self.offset).tolist(),
            scale=keras.ops.convert_to_numpy(self.scale).tolist(),
            lower=None if np.all(np.isinf(self.lower)) else self.lower.tolist(),
            upper=None if np.all(np.isinf(self.upper)) else self.upper.tolist(),
        )
        return config
