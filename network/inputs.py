"""The model's inputs as arrays, from the DataFrame of tracks: no TensorFlow needed.

x is the features in order, float32 [N, n_features]; y (not for lwtnn) the algo branch as
float32 [N, 1], as CMSSW feeds them. The matrices are 64-byte aligned so that TensorFlow can
share their memory instead of copying them (network.data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def aligned_empty(shape: tuple[int, ...], dtype: Any, alignment: int = 64) -> np.ndarray:
    """np.empty whose data start on an `alignment`-byte boundary, as TensorFlow's CPU kernels
    require of a buffer they share (Eigen's alignment)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + size].view(dtype).reshape(shape)


def model_inputs(df: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """What CMSSW feeds the model for these tracks: x = the features in order (float32), and for
    a model with the algo input y = the algo branch as float32 [N, 1]."""
    inputs = {"x": feature_matrix([df], cfg["features"])}
    if cfg.get("deploy_target") != "lwtnn":
        inputs["y"] = feature_matrix([df], [cfg["algo_branch"]])
    return inputs


def feature_matrix(frames: Sequence[pd.DataFrame], columns: Sequence[str]) -> np.ndarray:
    """float32 [rows of all frames, columns], filled column by column: one copy, no temporary."""
    out = aligned_empty((sum(len(f) for f in frames), len(columns)), np.float32)
    start = 0
    for frame in frames:
        for j, column in enumerate(columns):
            out[start : start + len(frame), j] = frame[column].to_numpy()
        start += len(frame)
    return out
