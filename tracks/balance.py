"""The training samples' tracks of the classified iterations, balanced and split by events."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from cmssw.ntuple import ALGORITHMS, LABEL


def balance_iterations(
    df: pd.DataFrame,
    iterations: list[str],
    seed: int = 0,
    balance_true_fake: bool = False,
    max_per_iteration: int = 0,
    algo_column: str = "trk_originalAlgo",
    label_column: str = LABEL,
) -> pd.DataFrame:
    """Keep the tracks of the classified iterations, each downsampled to the size of the smallest.

    With balance_true_fake, every iteration contributes the same number of true and of fake
    tracks (the smallest such count over iterations). Iterations with no track are left out of
    the minimum, with a warning. The rows are picked by index and copied once, in file order.
    """
    rng = np.random.default_rng(seed)
    algo = df[algo_column].to_numpy()
    groups: dict[str, list[np.ndarray]] = {}
    for name in iterations:
        rows = np.flatnonzero(algo == ALGORITHMS[name])
        if balance_true_fake:
            is_true = df[label_column].to_numpy()[rows] == 1
            groups[name] = [rows[is_true], rows[~is_true]]
        else:
            groups[name] = [rows]
    present = {name: parts for name, parts in groups.items() if all(len(p) for p in parts)}
    for name in groups.keys() - present.keys():
        what = "true or fake tracks" if balance_true_fake else "tracks"
        message = f"balance_iterations: no {what} of {name}; it is left out of the balancing"
        warnings.warn(message, stacklevel=2)
    if not present:
        raise ValueError(
            f"balance_iterations: none of the iterations {iterations} has tracks in the training "
            f"samples; check the 'iterations' setting and the samples' {algo_column}."
        )
    size = min(len(p) for parts in present.values() for p in parts)
    if max_per_iteration:
        size = min(size, max_per_iteration // (2 if balance_true_fake else 1))
    keep = [rng.choice(p, size, replace=False) for parts in present.values() for p in parts]
    return df.take(np.sort(np.concatenate(keep))).reset_index(drop=True)


def select_iterations(
    df: pd.DataFrame, iterations: list[str], algo_column: str = "trk_originalAlgo"
) -> pd.DataFrame:
    """The tracks of the classified iterations, all of them (no balancing), index reset."""
    algos = [ALGORITHMS[name] for name in iterations]
    return df[df[algo_column].isin(algos)].reset_index(drop=True)


def finite_inputs(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The tracks whose every input column is finite, index reset. For a model without NaN
    handling in its graph (lwtnn): a track with a NaN input gets a NaN score in CMSSW whatever
    the training, so it only spoils the training and validation losses."""
    finite = np.isfinite(df[columns].to_numpy(dtype=np.float32)).all(axis=1)
    return df if finite.all() else df[finite].reset_index(drop=True)


def split_by_events(
    df: pd.DataFrame, fractions: list[float], seed: int = 0, event_column: str = "event_index"
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split into train / validation / test by whole events: an event's tracks stay together."""
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"split_fractions = {fractions}: give three fractions >= 0 summing to 1.")
    events = df[event_column].to_numpy()
    unique = np.unique(events)
    np.random.default_rng(seed).shuffle(unique)
    bounds = np.round(np.cumsum(fractions)[:2] * len(unique)).astype(int)
    split_of_event = np.zeros(int(unique.max(initial=0)) + 1, dtype=np.int8)
    split_of_event[unique[bounds[0] : bounds[1]]] = 1
    split_of_event[unique[bounds[1] :]] = 2
    split = split_of_event[events]
    return tuple(df[split == k].reset_index(drop=True) for k in range(3))  # type: ignore[return-value]
