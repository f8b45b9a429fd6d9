"""In-graph preprocessing of the 29 raw track features: transform, clean, clip, scale.

CMSSW feeds the frozen graph raw values (cmssw/classifiers.py), so everything the network
needs to see well-behaved inputs has to happen here, with ops an older TensorFlow C++ runtime
knows. For every column j, with its transform T_j and bounds [lower_j, upper_j]:

    t   = T_j(x)                        (see TRANSFORMS)
    t   = clip(t, lower_j, upper_j)     (+inf -> upper_j, -inf -> lower_j)
    out = 2 (t - lower_j) / (upper_j - lower_j) - 1      in [-1, 1]

A NaN input goes to the middle of the bounds, i.e. out = 0 exactly; a constant column
(upper_j - lower_j <= 1e-6 * max(|lower_j|, |upper_j|)) gives out = 0. The output is always finite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from network.choices import TRANSFORMS

# Floor of the log transforms: a zero or negative value lands far below any real one, where the
# fitted lower bound clips it.
LOG_FLOOR = 1e-10

# Below this relative width a column is treated as constant (float32 has ~1.2e-7 resolution).
_RELATIVE_EPSILON = 1e-6


def _check_transform(name: str, where: str) -> None:
    if name not in TRANSFORMS:
        raise ValueError(
            f"unknown transform {name!r} for {where}; allowed: {', '.join(TRANSFORMS)}"
        )


def transforms_for_features(
    features: Sequence[str], feature_transforms: Mapping[str, str]
) -> list[str]:
    """One transform per feature, looked up by name; features not in the mapping get "none".

    A key of `feature_transforms` that is not a feature is an error (most likely a typo that
    would otherwise silently leave that feature untransformed).
    """
    unknown = sorted(set(feature_transforms) - set(features))
    if unknown:
        raise ValueError(f"feature_transforms names features not in `features`: {unknown}")
    transforms = []
    for feature in features:
        name = feature_transforms.get(feature, "none")
        _check_transform(name, f"feature {feature!r}")
        transforms.append(name)
    return transforms


def _apply_transform_numpy(values: np.ndarray, name: str) -> np.ndarray:
    if name == "none":
        return values
    if name == "abs":
        return np.abs(values)
    if name == "log1p":
        return np.log1p(np.maximum(values, 0.0))
    if name == "abs_log1p":
        return np.log1p(np.abs(values))
    if name == "signed_log1p":
        return np.sign(values) * np.log1p(np.abs(values))
    if name == "log":
        return np.log(np.maximum(values, LOG_FLOOR))
    if name == "abs_log":
        return np.log(np.maximum(np.abs(values), LOG_FLOOR))
    raise ValueError(f"unknown transform {name!r}; allowed: {', '.join(TRANSFORMS)}")


def fit_sanitizer_bounds(
    x: np.ndarray,
    transforms: Sequence[str],
    quantile: float = 0.001,
    max_tracks: int = 1_000_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Clip bounds for InputSanitizerLayer: per column, the `quantile` and `1 - quantile`
    quantiles of the transformed training values.

    Rule: take a random subsample of at most `max_tracks` rows (without replacement, seeded),
    apply each column's transform, drop non-finite values (NaN, +-inf), and return the q and
    1-q quantiles (linear interpolation) as float32 arrays `(lower, upper)` of shape
    [n_features]. A column with no finite value gets (0, 0), which the layer maps to 0.

    Why quantiles and not min/max: real training data holds rare pathological extremes (pt up
    to 4e6 GeV, ptErr 6e11, nChi2 2e7, dz = -99999 for "no vertex", ...). With min/max they
    would set the scale and squeeze the bulk of the tracks into a tiny interval; robust bounds
    keep the bulk spread over [-1, 1] and clip the outliers to the edges.

    Memory: the rows are subsampled first, then each column is transformed on its own in
    float64, so no float64 copy of the full [N, n_features] array is ever made.
    """
    x = np.asarray(x)  # no copy for an array; a DataFrame must not be indexed by column below
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [tracks, features], got shape {x.shape}")
    if x.shape[1] != len(transforms):
        raise ValueError(f"x has {x.shape[1]} columns but {len(transforms)} transforms")
    for j, name in enumerate(transforms):
        _check_transform(name, f"column {j}")
    if not 0.0 <= quantile < 0.5:
        raise ValueError(f"sanitizer quantile must be in [0, 0.5), got {quantile}")
    if max_tracks < 1:
        raise ValueError(f"max_tracks must be positive, got {max_tracks}")

    n_rows = x.shape[0]
    if n_rows > max_tracks:
        rng = np.random.default_rng(seed)
        # Sorted indices: the gather then walks memory forward, much faster on a big array.
        rows = np.sort(rng.choice(n_rows, size=max_tracks, replace=False))
        sample = x[rows]
    else:
        sample = x

    lower = np.zeros(len(transforms), dtype=np.float32)
    upper = np.zeros(len(transforms), dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        for j, name in enumerate(transforms):
            column = _apply_transform_numpy(sample[:, j].astype(np.float64), name)
            column = column[np.isfinite(column)]
            if column.size:
                lower[j], upper[j] = np.quantile(column, [quantile, 1.0 - quantile])
    return lower, upper


def _as_bounds(values: Sequence[float] | np.ndarray | None, n: int, default: float, what: str):
    if values is None:
        return np.full(n, default, dtype=np.float32)
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"`{what}` must have shape ({n},), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{what}` must be finite, got {array.tolist()}")
    return array.astype(np.float32)


@keras.saving.register_keras_serializable(package="track_dnn")
class InputSanitizerLayer(keras.layers.Layer):
    """Per-column transform, NaN cleaning, clipping to [lower, upper] and scaling to [-1, 1].

    Args:
        transforms: one name from TRANSFORMS per input column (build it by feature name with
            `transforms_for_features`).
        lower, upper: clip bounds per column (e.g. from `fit_sanitizer_bounds`); default -1, 1.
            Stored as non-trainable weights, so they are saved with the model and become
            constants of a frozen graph.
    """

    def __init__(
        self,
        transforms: Sequence[str],
        lower: Sequence[float] | np.ndarray | None = None,
        upper: Sequence[float] | np.ndarray | None = None,
        **kwargs,
    ) -> None:
        # float32 whatever the global policy: log1p of 6e11 or a 1e5 offset need float32 range.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.transforms = list(transforms)
        if not self.transforms:
            raise ValueError("InputSanitizerLayer needs at least one column (transforms is empty)")
        for j, name in enumerate(self.transforms):
            _check_transform(name, f"column {j}")
        n = len(self.transforms)
        lower_values = _as_bounds(lower, n, -1.0, "lower")
        upper_values = _as_bounds(upper, n, 1.0, "upper")
        _check_order(lower_values, upper_values)

        # Column masks, one boolean vector per transform, broadcast over the batch in call().
        self._masks = {name: np.array([t == name for t in self.transforms]) for name in TRANSFORMS}
        self.lower = self.add_weight(
            name="lower",
            shape=(n,),
            initializer=keras.initializers.Constant(lower_values),
            trainable=False,
            dtype="float32",
        )
        self.upper = self.add_weight(
            name="upper",
            shape=(n,),
            initializer=keras.initializers.Constant(upper_values),
            trainable=False,
            dtype="float32",
        )

    def set_bounds(self, lower: Sequence[float], upper: Sequence[float]) -> None:
        """Replace the clip bounds (e.g. after fitting them on the training set)."""
        n = len(self.transforms)
        lower_values = _as_bounds(lower, n, -1.0, "lower")
        upper_values = _as_bounds(upper, n, 1.0, "upper")
        _check_order(lower_values, upper_values)
        self.lower.assign(lower_values)
        self.upper.assign(upper_values)

    def build(self, input_shape) -> None:
        if input_shape[-1] is not None and input_shape[-1] != len(self.transforms):
            raise ValueError(
                f"InputSanitizerLayer has {len(self.transforms)} transforms but the input has "
                f"{input_shape[-1]} columns"
            )

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        is_nan = tf.math.is_nan(x)  # on the raw input: Maximum may swallow NaN on some runtimes
        abs_x = tf.abs(x)
        log1p_abs = tf.math.log1p(abs_x)

        t = x  # "none"
        t = tf.where(self._masks["abs"], abs_x, t)
        t = tf.where(self._masks["log1p"], tf.math.log1p(tf.maximum(x, 0.0)), t)
        t = tf.where(self._masks["abs_log1p"], log1p_abs, t)
        t = tf.where(self._masks["signed_log1p"], tf.sign(x) * log1p_abs, t)
        t = tf.where(self._masks["log"], tf.math.log(tf.maximum(x, LOG_FLOOR)), t)
        t = tf.where(self._masks["abs_log"], tf.math.log(tf.maximum(abs_x, LOG_FLOOR)), t)

        lower = tf.convert_to_tensor(self.lower)
        upper = tf.convert_to_tensor(self.upper)
        # NaN replaced by a finite value before any arithmetic; its output is set to 0 below.
        t = tf.where(is_nan, lower, t)
        t = tf.minimum(tf.maximum(t, lower), upper)

        width = upper - lower
        scale_ok = width > _RELATIVE_EPSILON * tf.maximum(tf.abs(lower), tf.abs(upper))
        safe_width = tf.where(scale_ok, width, tf.ones_like(width))
        # t - lower is in [0, width], so the ratio is in [0, 1] and the result in [-1, 1].
        scaled = 2.0 * ((t - lower) / safe_width) - 1.0
        scaled = tf.where(is_nan, 0.0, scaled)
        return tf.where(scale_ok, scaled, 0.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            transforms=list(self.transforms),
            lower=keras.ops.convert_to_numpy(self.lower).tolist(),
            upper=keras.ops.convert_to_numpy(self.upper).tolist(),
        )
        return config


def _check_order(lower: np.ndarray, upper: np.ndarray) -> None:
    bad = np.flatnonzero(lower > upper)
    if bad.size:
        raise ValueError(f"sanitizer bounds have lower > upper in columns {bad.tolist()}")
