"""What the RECO step adds to a track: simulation matches, the old classifier's score and the
quality bits it sets, duplicate merging and the algorithm bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmssw.ntuple import ALGORITHMS
from synthetic.detector import BFIELD_CURVATURE, STRIP_RADII
from synthetic.tables import ITERATION_CODES, ITERATIONS, NAMES


@dataclass
class SimMatches:
    best_idx: np.ndarray  # trk_bestSimTrkIdx
    best_share: np.ndarray  # trk_bestSimTrkShareFrac
    best_nchi2: np.ndarray  # trk_bestSimTrkNChi2
    counts: np.ndarray  # matched particles per track (0 for fakes)
    idx: np.ndarray  # the matched indices of all tracks concatenated
    frac: np.ndarray  # their shared-hit fractions


def sim_matches(
    rng: np.random.Generator,
    evt: np.ndarray,
    events: int,
    is_true: np.ndarray,
    n_valid: np.ndarray,
) -> SimMatches:
    """Matches to simulated particles, as quickTrackAssociatorByHits (>= 75 % shared hits):
    one, sometimes two, for a true track; none for a fake."""
    n = len(evt)
    n_true_event = np.bincount(evt[is_true], minlength=events)
    true_rank = np.cumsum(is_true) - 1 - np.concatenate([[0], np.cumsum(n_true_event)])[evt]
    # Unreconstructed simulated particles leave gaps between the indices.
    best_sim = np.where(is_true, 3 * true_rank + rng.integers(0, 3, n), -1)
    # Most fakes share some hits with a particle, below the 75 % of a match.
    partial = ~is_true & (rng.random(n) < 0.7)
    best_sim = np.where(
        partial, (rng.random(n) * 3 * np.maximum(n_true_event[evt], 1)).astype(int), best_sim
    )
    shared = np.where(
        is_true,
        np.where(rng.random(n) < 0.6, 1.0, rng.uniform(0.75, 1.0, n)),
        np.where(partial, rng.uniform(0.05, 0.75, n), 0.0),
    )
    # A fraction of the track's hits.
    shared = np.where(
        is_true, np.maximum(np.floor(shared * n_valid) / np.maximum(n_valid, 1), 0.75), shared
    )
    best_nchi2 = np.where(
        is_true | partial, rng.chisquare(5, n) / 5 * np.where(is_true, 1.0, 4.0), -1.0
    )
    counts = np.where(is_true, 1 + (rng.random(n) < 0.05), 0).astype(np.int64)
    second = counts == 2
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    idx = np.zeros(int(counts.sum()), dtype=np.int32)
    frac = np.zeros(len(idx), dtype=np.float32)
    idx[first[is_true]] = best_sim[is_true]
    frac[first[is_true]] = shared[is_true]
    idx[first[second] + 1] = 3 * n_true_event[evt][second] + true_rank[second]
    frac[first[second] + 1] = rng.uniform(0.75, 1.0, second.sum())
    return SimMatches(best_sim, shared, best_nchi2, counts, idx, frac)


def old_classifier(rng: np.random.Generator, t: dict[str, np.ndarray]) -> np.ndarray:
    """trk_mva in [-1, 1] of the classifier that ran in the RECO step.

    A linear model of a feature subset (no iteration, no direction, no hit-by-hit detail) plus
    noise: clearly below what a model of all features reaches.
    """

    def finite(a: np.ndarray) -> np.ndarray:
        return np.nan_to_num(a, nan=0.0, posinf=1e30)

    # The offset puts the release's highPurity cuts where they keep ~95-99 % of the true
    # tracks and reject about half of the fakes, as the classifier in RECO did.
    score = (
        2.6
        - 1.2 * np.log1p(finite(t["trk_nChi2"]))
        - 0.6 * t["trk_nLostLay"]
        - 0.1 * t["trk_nOuterLost"]
        + 0.08 * (t["trk_nPixel"] + t["trk_nStrip"])
        - 0.2 * np.log1p(np.abs(finite(t["trk_dzClosestPV"])) / t["trk_dzErr"])
        - 0.6 * np.log(np.clip(t["trk_ptErr"] / t["trk_pt"], 1e-4, 1e4) / 0.01)
        + rng.normal(0, 0.6, len(t["trk_pt"]))
    )
    return np.tanh(score / 2)


def bookkeeping(
    rng: np.random.Generator,
    it: np.ndarray,
    algo: np.ndarray,
    mva: np.ndarray,
    stopped: np.ndarray,
    pt: np.ndarray,
) -> dict[str, np.ndarray]:
    """Quality bits from the mva, duplicate merging (algo 2), algoMask, stopReason."""
    n = len(it)
    cuts = np.array([ITERATIONS[k].cuts for k in NAMES])[it]
    # Bits loose (1), tight (2), highPurity (4); the cuts are ordered, so the bits nest.
    quality = (mva > cuts[:, 0]) * 1 + (mva > cuts[:, 1]) * 2 + (mva > cuts[:, 2]) * 4
    # Merged duplicates keep their original iteration but become algo 2; some tracks were
    # found by a second iteration too (algoMask).
    merged = rng.random(n) < 0.02
    other = ITERATION_CODES[rng.integers(0, 12, n)].astype(np.uint64)
    algo_mask = (np.uint64(1) << algo.astype(np.uint64)) | np.where(
        merged | (rng.random(n) < 0.08), np.uint64(1) << other, np.uint64(0)
    )
    looper = 2 * pt / BFIELD_CURVATURE * 100 < STRIP_RADII[-1]
    stop_reason = np.where(stopped, rng.choice([2, 3, 4], n), 255)
    stop_reason = np.where(looper & ~stopped, 7, stop_reason)
    return {
        "trk_qualityMask": quality,
        "trk_isHP": (mva > cuts[:, 2]).astype(np.int16),
        "trk_algo": np.where(merged, ALGORITHMS["duplicateMerge"], algo),
        "trk_algoMask": algo_mask,
        "trk_stopReason": stop_reason,
    }
