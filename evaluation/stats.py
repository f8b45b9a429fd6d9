"""Uncertainties of the evaluation's numbers: Clopper-Pearson intervals of rates, and a
bootstrap over events for AUCs and paired differences.

Tracks of one event share its pileup, vertex and jets, so they are not independent: the
bootstrap resamples whole events. It uses Poisson(1) weights per event (the Poisson bootstrap,
equivalent to the multinomial one for many events), drawn once for every replica, so that a
replica is a weighted sum and all replicas are computed together with NumPy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import beta

AUC_BINS = 1000  # score bins of the bootstrapped AUC (the AUC itself is exact)


def clopper_pearson(
    kept: np.ndarray | float, total: np.ndarray | float, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """The exact (Clopper-Pearson) interval of a binomial fraction kept / total.

    Vectorised over arrays of counts; [0, upper] at kept = 0, [lower, 1] at kept = total, NaN
    where total is 0. Counts may be non-integer (weighted), as long as 0 <= kept <= total.
    """
    kept = np.asarray(kept, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = np.where(kept > 0, beta.ppf(alpha / 2, kept, total - kept + 1), 0.0)
        upper = np.where(kept < total, beta.ppf(1 - alpha / 2, kept + 1, total - kept), 1.0)
    empty = total <= 0
    return np.where(empty, np.nan, lower), np.where(empty, np.nan, upper)


def percentile_interval(replicas: np.ndarray, confidence: float = 0.95) -> list[float | None]:
    """[low, high] percentiles of the finite replicas, or [None, None] when there are none."""
    replicas = np.asarray(replicas, dtype=np.float64)
    finite = replicas[np.isfinite(replicas)]
    if finite.size < 2:
        return [None, None]
    alpha = 1.0 - confidence
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return [float(low), float(high)]


def event_codes(df: pd.DataFrame, event_column: str = "event_index") -> np.ndarray | None:
    """A dense event number per track, an event being (sample, event_index); None when the
    tracks carry no event number."""
    if event_column not in df.columns:
        return None
    keys = [c for c in ("sample", event_column) if c in df.columns]
    return df.groupby(keys, observed=True, sort=False).ngroup().to_numpy()


class EventBootstrap:
    """Poisson(1) weights of every event in `replicas` resamplings, seeded.

    codes: the event of each track (dense 0..E-1), or None to resample tracks one by one.
    Weights are stored as uint8 (a Poisson(1) draw above 255 never happens in practice).
    """

    def __init__(self, codes: np.ndarray | None, n_tracks: int, replicas: int, seed: int) -> None:
        if replicas < 2:
            raise ValueError(f"bootstrap_samples = {replicas}: give at least 2 (e.g. 200)")
        self.per_event = codes is not None
        self.codes = np.arange(n_tracks) if codes is None else np.asarray(codes)
        n_events = int(self.codes.max(initial=-1)) + 1
        rng = np.random.default_rng(seed)
        self.weights = rng.poisson(1.0, (replicas, n_events)).astype(np.uint8)
        self.replicas = replicas

    @property
    def unit(self) -> str:
        return "events" if self.per_event else "tracks"

    def group(self, rows: np.ndarray) -> GroupReplicas:
        """The resampling of the tracks `rows` (a bool mask or indices), for totals and AUCs."""
        local, inverse = np.unique(self.codes[rows], return_inverse=True)
        return GroupReplicas(self.weights[:, local].astype(np.float64), inverse)


class GroupReplicas:
    """Replica weights [replicas, events] of the events of a group of tracks, and each
    track's event among them."""

    def __init__(self, weights: np.ndarray, inverse: np.ndarray) -> None:
        self.weights, self.inverse = weights, inverse

    def totals(self, values: np.ndarray) -> np.ndarray:
        """[replicas, K]: the weighted sums of values [tracks, K], summed per event first so
        that the product is events x K."""
        n = len(self.inverse)
        values = np.asarray(values, dtype=np.float64).reshape(n, -1)
        by_event = sparse.csr_matrix(
            (np.ones(n), (self.inverse, np.arange(n))), shape=(self.weights.shape[1], n)
        )
        return self.weights @ (by_event @ values)

    def aucs(self, labels: np.ndarray, scores: np.ndarray, exact: float) -> np.ndarray:
        """[replicas]: the AUC of scores in every replica; exact is the AUC of the tracks.

        For speed the scores are grouped into AUC_BINS quantile bins, true and fake tracks
        counted per (event, bin), and each replica weighs those counts; the replicas' spread
        is then moved onto the exact (unbinned) AUC."""
        labels = np.asarray(labels, dtype=bool)
        scores = np.asarray(scores, dtype=np.float64)
        sample = scores[:: max(1, len(scores) // (20 * AUC_BINS))]  # quantiles: any bins do
        edges = np.unique(np.quantile(sample, np.linspace(0, 1, AUC_BINS + 1)))
        bins = np.searchsorted(edges[1:-1], scores, side="right")
        shape = (self.weights.shape[1], max(len(edges) - 1, 1))
        per_class = [
            sparse.csr_matrix((np.ones(mask.sum()), (self.inverse[mask], bins[mask])), shape=shape)
            for mask in (labels, ~labels)
        ]
        true_w, fake_w = ((m.T @ self.weights.T).T for m in per_class)
        binned = binned_auc(*(np.asarray(m.sum(axis=0)) for m in per_class))[0]
        return binned_auc(true_w, fake_w) + (exact - binned)


def binned_auc(true_counts: np.ndarray, fake_counts: np.ndarray) -> np.ndarray:
    """AUC per row of (weighted) true and fake counts [R, bins] in ascending score bins: the
    probability that a true track scores above a fake one, half for the same bin."""
    fakes_below = np.cumsum(fake_counts, axis=1) - fake_counts
    pairs = true_counts.sum(axis=1) * fake_counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (true_counts * (fakes_below + 0.5 * fake_counts)).sum(axis=1) / pairs


def fake_rate_difference(
    counts: np.ndarray, confidence: float = 0.95
) -> dict[str, float | list[float | None] | bool | None]:
    """The paired change of the fake rate (fakes among kept tracks), from counts
    [..., 4] = (true kept A, fake kept A, true kept B, fake kept B): the first row the
    observed counts, the others the bootstrap replicas. A is the new model, B the other.

    Returns difference (A - B, in fake-rate units) and relative change (A / B - 1), each with
    its percentile interval, and whether the difference's interval excludes zero.
    """
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate_a = counts[:, 1] / (counts[:, 0] + counts[:, 1])
        rate_b = counts[:, 3] / (counts[:, 2] + counts[:, 3])
        difference = rate_a - rate_b
        relative = rate_a / rate_b - 1.0
    interval = percentile_interval(difference[1:], confidence)
    significant = None
    if None not in interval:
        significant = bool(interval[0] > 0 or interval[1] < 0)
    return {
        "difference": _finite(difference[0]),
        "difference_interval": interval,
        "relative_change": _finite(relative[0]),
        "relative_change_interval": percentile_interval(relative[1:], confidence),
        "significant": significant,
    }


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
