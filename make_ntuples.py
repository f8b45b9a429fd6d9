"""Synthetic trackingNtuple files: the embedded sample of the project and a CLI tool.

    python make_ntuples.py --out data/synthetic/qcd --events 300 --process qcd --seed 1

The files have the layout of CMSSW's TrackingNtuple (spec/TRACKING_NTUPLE.md): TDirectory
``trackingNtuple``, TTree ``tree``, one entry per event, every ``trk_*`` branch with the spec's
element type, plus ``event``/``lumi``/``run``, ``vtx_*`` and ``bsp_*``. Two writers:

- ``uproot``: counter-based jagged branches (``ntrk`` + ``trk_pt`` as ``float[]``), fast, label
  ``trk_isTrue`` only (uproot cannot write ``std::vector<std::vector<int>>``);
- ``root``: real ROOT in a child process (PyROOT must never be imported next to TensorFlow), the
  exact CMSSW layout with ``std::vector<T>`` branches, either label convention.

The tracks follow a simple detector model (see ``generate_events``): iterations with CMS-like
populations and fake rates, falling pt spectra, helix kinematics in 3.8 T, hit patterns from the
Phase-1 layer radii, impact parameters w.r.t. beam spot and generated vertices, and fakes that
differ from true tracks in many features at once without any single one separating them.

``generate_events`` returns ``(counts, arrays)``:

- ``counts``: int64 [events], tracks per event;
- ``arrays["trk_*"]``: one flat array per track branch of ``TRACK_BRANCHES`` (all tracks of all
  events concatenated, spec element types), plus ``trk_isTrue`` (int16, the generated truth);
- ``arrays["simTrkIdx_counts"]``: int64 [tracks], matched simulated particles per track (0 for
  fakes, 1 or 2 for true tracks); ``arrays["simTrkIdx_flat"]`` (int32) and
  ``arrays["simTrkShareFrac_flat"]`` (float32): the matches of all tracks concatenated;
- per event: ``event`` (uint64), ``lumi``, ``run`` (uint32), ``bsp_x/y/z`` (float32),
  ``vtx_counts`` (int64, vertices per event);
- ``arrays["vtx_*"]``: the vertices of all events concatenated (float32).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import uproot
from tqdm import tqdm

from cmssw.ntuple import ALGORITHMS

TREE_DIR, TREE_NAME = "trackingNtuple", "tree"
PROCESS_NAMES = ("qcd", "ttbar", "displaced", "zee")
LABELS = ("trk_isTrue", "trk_simTrkIdx")
WRITERS = ("auto", "uproot", "root")
# ROOT's default level of each algorithm (RCompressionSetting::EDefaults), for both writers.
COMPRESSION_LEVELS = {"ZLIB": 1, "LZMA": 7, "LZ4": 4, "ZSTD": 5}
ROOT_ALGORITHM_CODES = {"ZLIB": 1, "LZMA": 2, "LZ4": 4, "ZSTD": 5}

# Branches in the order CMSSW books them (and the fixtures show), with their element types.
EVENT_BRANCHES = {"event": np.uint64, "lumi": np.uint32, "run": np.uint32}
# fmt: off
_FLOAT_TRACK_BRANCHES = [
    "px", "py", "pz", "pt", "inner_px", "inner_py", "inner_pz", "inner_pt", "outer_px",
    "outer_py", "outer_pz", "outer_pt", "eta", "lambda", "cotTheta", "phi", "dxy", "dz", "dxyPV",
    "dzPV", "dxyClosestPV", "dzClosestPV", "ptErr", "etaErr", "lambdaErr", "phiErr", "dxyErr",
    "dzErr", "refpoint_x", "refpoint_y", "refpoint_z", "nChi2", "nChi2_1Dmod", "ndof", "mva",
    "bestSimTrkShareFrac", "bestSimTrkNChi2",
]
_UINT_TRACK_BRANCHES = [
    "nValid", "nLost", "nInactive", "nPixel", "nStrip", "nOuterLost", "nInnerLost",
    "nOuterInactive", "nInnerInactive", "nPixelLay", "nStripLay", "n3DLay", "nLostLay", "nCluster",
    "algo", "originalAlgo",
]
# fmt: on
TRACK_BRANCHES = {
    **{f"trk_{name}": np.float32 for name in _FLOAT_TRACK_BRANCHES},
    **{f"trk_{name}": np.uint32 for name in _UINT_TRACK_BRANCHES},
    "trk_q": np.int32,
    "trk_vtxIdx": np.int32,
    "trk_bestSimTrkIdx": np.int32,
    "trk_stopReason": np.uint16,
    "trk_qualityMask": np.uint16,
    "trk_isHP": np.int16,
    "trk_algoMask": np.uint64,
}
VERTEX_BRANCHES = {f"vtx_{name}": np.float32 for name in ("x", "y", "z", "ndof", "chi2")}
BEAMSPOT_BRANCHES = {f"bsp_{name}": np.float32 for name in ("x", "y", "z")}

ROOT_MISSING = (
    "the ROOT writer needs PyROOT, which could not be imported: install it with "
    "`pip install -r requirements.txt` (the `root` package), or write without ROOT with "
    "`--writer uproot --label trk_isTrue`"
)

# ---------------------------------------------------------------------------------------------
# The detector and physics model
# ---------------------------------------------------------------------------------------------
PIXEL_RADII = np.array([2.9, 6.8, 10.9, 16.0])  # Phase-1 BPix layers, cm
STRIP_RADII = np.array([25.5, 33.9, 41.9, 49.8, 60.8, 69.2, 78.0, 86.8, 96.5, 108.0])  # TIB, TOB
LAYER_RADII = np.concatenate([PIXEL_RADII, STRIP_RADII])
BFIELD_CURVATURE = 0.3 * 3.8  # 1/R [1/m] = 0.3 B / pt [GeV]
BEAMSPOT = (0.0107, 0.0417, 0.35)  # cm, a typical Run-3 beam spot position
NO_VERTEX = (0.0, 0.0, -99999.0)  # TrackingNtuple's point when no good vertex exists


@dataclass(frozen=True)
class Iteration:
    weight: float  # population in qcd (normalised per process)
    fake: float  # fake fraction at the reference occupancy
    pt_min: float  # GeV, where the seeding starts to be efficient
    displaced: float  # fraction of true tracks from secondary decays
    radius: float  # mean production radius of those, cm
    pixel_layers: tuple[float, ...]  # P(nPixelLay = 0..4) given by the seeding
    forward: float  # fraction of tracks with |eta| > 1.2 (0.52 is flat in eta)
    cuts: tuple[float, float, float]  # mva working points loose, tight, highPurity


ITERATIONS = {
    "initialStep": Iteration(
        0.450, 0.03, 0.45, 0.08, 0.15, (0, 0, 0, 0.12, 0.88), 0.50, (-0.35, 0.10, 0.28)
    ),
    "lowPtQuadStep": Iteration(
        0.130, 0.08, 0.15, 0.10, 0.20, (0, 0, 0, 0.15, 0.85), 0.52, (-0.37, 0.08, 0.28)
    ),
    "highPtTripletStep": Iteration(
        0.085, 0.06, 0.55, 0.08, 0.20, (0, 0, 0, 0.55, 0.45), 0.52, (-0.26, 0.20, 0.42)
    ),
    "lowPtTripletStep": Iteration(
        0.070, 0.12, 0.20, 0.12, 0.30, (0, 0, 0, 0.60, 0.40), 0.52, (-0.23, 0.03, 0.15)
    ),
    "detachedQuadStep": Iteration(
        0.060, 0.15, 0.30, 0.60, 1.00, (0, 0, 0, 0.20, 0.80), 0.50, (-0.62, -0.09, 0.24)
    ),
    "detachedTripletStep": Iteration(
        0.050, 0.20, 0.25, 0.70, 1.50, (0, 0, 0.05, 0.60, 0.35), 0.50, (-0.32, 0.24, 0.50)
    ),
    "pixelPairStep": Iteration(
        0.042, 0.18, 0.60, 0.20, 0.50, (0, 0, 0.45, 0.40, 0.15), 0.45, (-0.38, -0.23, -0.09)
    ),
    "mixedTripletStep": Iteration(
        0.034, 0.30, 0.40, 0.70, 4.00, (0, 0.25, 0.40, 0.30, 0.05), 0.60, (-0.83, -0.63, -0.38)
    ),
    "pixelLessStep": Iteration(
        0.026, 0.35, 0.40, 0.80, 8.00, (0.80, 0.10, 0.07, 0.03, 0), 0.70, (-0.60, -0.40, -0.20)
    ),
    "tobTecStep": Iteration(
        0.020, 0.40, 0.55, 0.85, 15.0, (0.85, 0.08, 0.05, 0.02, 0), 0.50, (-0.76, -0.65, -0.55)
    ),
    "jetCoreRegionalStep": Iteration(
        0.008, 0.25, 15.0, 0.20, 0.30, (0, 0, 0.10, 0.40, 0.50), 0.15, (-0.62, -0.49, 0.05)
    ),
    "displacedRegionalStep": Iteration(
        0.001, 0.30, 1.00, 1.00, 20.0, (0.50, 0.20, 0.15, 0.10, 0.05), 0.50, (-0.66, -0.41, -0.16)
    ),
    "muonSeededStepInOut": Iteration(
        0.004, 0.05, 2.00, 0.05, 0.10, (0, 0, 0.10, 0.40, 0.50), 0.50, (-0.5, 0.0, 0.3)
    ),
    "muonSeededStepOutIn": Iteration(
        0.002, 0.05, 2.00, 0.05, 0.10, (0.30, 0.10, 0.20, 0.20, 0.20), 0.50, (-0.5, 0.0, 0.3)
    ),
}
ITERATION_CODES = np.array([ALGORITHMS[name] for name in ITERATIONS])


@dataclass(frozen=True)
class Process:
    hard_tracks: float  # mean reconstructed tracks of the hard scatter
    pileup: float  # mean reconstructed pileup vertices
    tracks_per_pileup: float  # reconstructed tracks per pileup vertex
    pt_index: float  # power-law index of the pt spectrum (harder = smaller)
    weights: dict[str, float]  # iteration populations changed w.r.t. ITERATIONS
    displaced_boost: float = 1.0  # scales the displaced fraction of displaced iterations


PROCESSES = {
    "qcd": Process(55, 8, 7, 3.1, {}),
    "ttbar": Process(
        170,
        9,
        7,
        2.8,
        {
            "jetCoreRegionalStep": 0.022,
            "detachedQuadStep": 0.064,
            "muonSeededStepInOut": 0.008,
            "muonSeededStepOutIn": 0.004,
        },
    ),
    "displaced": Process(
        60,
        8,
        7,
        3.0,
        {
            "displacedRegionalStep": 0.04,
            "jetCoreRegionalStep": 0.003,
            # Long-lived decays feed the detached iterations too.
            "detachedQuadStep": 0.066,
            "detachedTripletStep": 0.058,
            "mixedTripletStep": 0.040,
            "pixelLessStep": 0.032,
            "tobTecStep": 0.025,
        },
        displaced_boost=1.8,
    ),
    "zee": Process(
        22,
        8,
        7,
        3.3,
        {"jetCoreRegionalStep": 0.001, "displacedRegionalStep": 0.0005},
    ),
}
# Iterations whose true tracks are mostly secondaries; Process.displaced_boost scales them.
DISPLACED_ITERATIONS = (
    "detachedQuadStep",
    "detachedTripletStep",
    "mixedTripletStep",
    "pixelLessStep",
    "tobTecStep",
    "displacedRegionalStep",
)
EMPTY_EVENT_FRACTION = 0.02  # events with no reconstructed track at all
FAILED_VERTEX_FRACTION = 0.001  # events whose vertex reconstruction found no good vertex
OUTLIER_FRACTION = 5e-4  # tracks with the pathological values of real data
NAN_FRACTION = 2e-4  # tracks with a NaN in one float feature
NAN_BRANCHES = (
    "trk_nChi2",
    "trk_ptErr",
    "trk_dxyErr",
    "trk_dzErr",
    "trk_etaErr",
    "trk_phiErr",
    "trk_dxyClosestPV",
    "trk_dzClosestPV",
)


def _rank_in_group(group: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Position of each element inside its (contiguous) group: 0, 1, ... per group."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.arange(len(group)) - starts[group]


def _dxy_dz(x, y, z, px, py, pz, pt, point) -> tuple[np.ndarray, np.ndarray]:
    """reco::TrackBase::dxy(point) and dz(point) of tracks with reference (x, y, z)."""
    dx, dy, dz = x - point[0], y - point[1], z - point[2]
    return (-dx * py + dy * px) / pt, dz - (dx * px + dy * py) / pt * pz / pt


def _wrap(phi: np.ndarray) -> np.ndarray:
    """Angle in [-pi, pi)."""
    return np.mod(phi + np.pi, 2 * np.pi) - np.pi


def _bend(phi: np.ndarray, q: np.ndarray, pt: np.ndarray, radius_cm: np.ndarray) -> np.ndarray:
    """Momentum direction after bending in the 3.8 T field out to a radius (phi - q asin(R/2r))."""
    sine = np.minimum(BFIELD_CURVATURE * radius_cm / 100 / (2 * pt), 1.0)
    return _wrap(phi - q * np.arcsin(sine))


def _closest_vertex(
    evt: np.ndarray, z: np.ndarray, vtx_evt: np.ndarray, vtx_z: np.ndarray, vtx_index: np.ndarray
) -> np.ndarray:
    """For each track (event, z), ``vtx_index`` of the vertex of its event closest in z, or -1.

    One binary search over (event, z) keys: the nearest vertex is a neighbour of the insertion
    point, below or above it.
    """
    key = vtx_evt * 1e4 + vtx_z  # |z| stays far below 5e3 cm, so events never overlap
    order = np.argsort(key)
    key, vtx_evt, vtx_index = key[order], vtx_evt[order], vtx_index[order]
    track_key = evt * 1e4 + z
    pos = np.searchsorted(key, track_key)
    best, best_dist = np.full(len(evt), -1), np.full(len(evt), np.inf)
    for candidate in (pos - 1, pos) if len(key) else ():
        c = np.clip(candidate, 0, len(key) - 1)
        same_event = (candidate >= 0) & (candidate < len(key)) & (vtx_evt[c] == evt)
        dist = np.where(same_event, np.abs(key[c] - track_key), np.inf)
        better = dist < best_dist
        best, best_dist = np.where(better, vtx_index[c], best), np.where(better, dist, best_dist)
    return best


def _sim_matches(
    rng: np.random.Generator,
    evt: np.ndarray,
    events: int,
    is_true: np.ndarray,
    n_valid: np.ndarray,
    badness: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Matches to simulated particles, as quickTrackAssociatorByHits (>= 75 % shared hits).

    Returns per track bestSimTrkIdx, bestSimTrkShareFrac, bestSimTrkNChi2 and the number of
    matches (1, sometimes 2, for true tracks; 0 for fakes), then the matched indices and share
    fractions of all tracks concatenated.
    """
    n = len(evt)
    n_true_event = np.bincount(evt[is_true], minlength=events)
    true_rank = np.cumsum(is_true) - 1 - np.concatenate([[0], np.cumsum(n_true_event)])[evt]
    # Unreconstructed simulated particles leave gaps between the indices.
    best_sim = np.where(is_true, 3 * true_rank + rng.integers(0, 3, n), -1)
    # Most fakes share some hits with a particle, below the 75 % of a match.
    fake_partial = ~is_true & (rng.random(n) < 0.7)
    best_sim = np.where(
        fake_partial, (rng.random(n) * 3 * np.maximum(n_true_event[evt], 1)).astype(int), best_sim
    )
    shared = np.where(
        is_true,
        np.where(rng.random(n) < 0.6, 1.0, rng.uniform(0.75, 1.0, n)),
        np.where(fake_partial, rng.uniform(0.05, 0.75, n), 0.0),
    )
    # A fraction of the track's hits.
    shared = np.where(
        is_true, np.maximum(np.floor(shared * n_valid) / np.maximum(n_valid, 1), 0.75), shared
    )
    best_nchi2 = np.where(is_true | fake_partial, rng.chisquare(5, n) / 5 * (1 + 3 * badness), -1.0)

    counts = np.where(is_true, 1 + (rng.random(n) < 0.05), 0).astype(np.int64)
    second = counts == 2
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    idx = np.zeros(int(counts.sum()), dtype=np.int32)
    frac = np.zeros(len(idx), dtype=np.float32)
    idx[first[is_true]] = best_sim[is_true]
    frac[first[is_true]] = shared[is_true]
    idx[first[second] + 1] = 3 * n_true_event[evt][second] + true_rank[second]
    frac[first[second] + 1] = rng.uniform(0.75, 1.0, second.sum())
    return best_sim, shared, best_nchi2, counts, idx, frac


def _old_classifier(
    rng: np.random.Generator,
    nchi2: np.ndarray,
    n_lost_lay: np.ndarray,
    n_outer_lost: np.ndarray,
    n_inner_lost: np.ndarray,
    dz_closest: np.ndarray,
    dz_err: np.ndarray,
    pt_err: np.ndarray,
    pt: np.ndarray,
) -> np.ndarray:
    """trk_mva in [-1, 1] of the classifier that ran in the RECO step.

    A linear model of a feature subset (no iteration, no hit-by-hit information) plus noise:
    a few points of AUC below what a model of all features reaches.
    """

    def finite(a: np.ndarray) -> np.ndarray:
        return np.nan_to_num(a, nan=0.0, posinf=1e30)

    score = (
        7.0
        - 0.8 * np.log1p(finite(nchi2))
        - 0.75 * n_lost_lay
        - 0.2 * n_outer_lost
        - 0.9 * n_inner_lost
        - 0.15 * np.log1p(np.abs(finite(dz_closest)) / dz_err)
        - 1.4 * np.log(np.clip(pt_err / pt, 1e-4, 1e4) / 0.01)
        + rng.normal(0, 0.3, len(pt))
    )
    return np.tanh(score / 2)


def generate_events(
    process: str, events: int, seed: int, *, file_index: int = 0, first_event: int = 1
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Generate ``events`` events of ``process``; returns (tracks per event, flat arrays).

    The structure of the arrays is described in the module docstring. The same (seed,
    file_index) gives bitwise-identical arrays; ``first_event`` numbers the events.
    """
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r} (--process): choose one of {PROCESS_NAMES}")
    if events < 0:
        raise ValueError(f"--events must be >= 0, got {events}")
    proc = PROCESSES[process]
    rng = np.random.default_rng([seed, file_index])

    # --- events: multiplicities, vertices, beam spot ------------------------------------------
    n_pu_vtx = rng.poisson(proc.pileup, events)
    # Negative binomial hard-scatter multiplicity: QCD-like long tail.
    n_hard = rng.poisson(rng.gamma(3.0, proc.hard_tracks / 3.0, events))
    n_pu = rng.poisson(proc.tracks_per_pileup * n_pu_vtx)
    counts = (n_hard + n_pu).astype(np.int64)
    counts[rng.random(events) < EMPTY_EVENT_FRACTION] = 0
    n = int(counts.sum())
    evt = np.repeat(np.arange(events), counts)
    rank = _rank_in_group(evt, counts)
    occupancy = (counts[evt] / 100.0) ** 0.25  # busier events have more fakes

    bsp = [
        np.full(events, c, dtype=np.float64) + rng.normal(0, s, events)
        for c, s in zip(BEAMSPOT, (2e-4, 2e-4, 0.05), strict=True)
    ]
    n_raw_vtx = 1 + n_pu_vtx  # the hard scatter first
    raw_off = np.concatenate([[0], np.cumsum(n_raw_vtx)])
    raw_evt = np.repeat(np.arange(events), n_raw_vtx)
    raw_x = bsp[0][raw_evt] + rng.normal(0, 0.0012, len(raw_evt))
    raw_y = bsp[1][raw_evt] + rng.normal(0, 0.0012, len(raw_evt))
    raw_z = bsp[2][raw_evt] + rng.normal(0, 3.5, len(raw_evt))

    # --- iteration and truth ------------------------------------------------------------------
    names = list(ITERATIONS)
    weights = np.array([proc.weights.get(k, ITERATIONS[k].weight) for k in names])
    it = rng.choice(len(names), size=n, p=weights / weights.sum())
    table = {
        field: np.array([getattr(ITERATIONS[k], field) for k in names], dtype=np.float64)
        for field in ("fake", "pt_min", "displaced", "radius", "forward")
    }
    algo = ITERATION_CODES[it]
    fake_prob = np.minimum(table["fake"][it] * occupancy, 0.85)
    is_true = rng.random(n) >= fake_prob
    is_jetcore = algo == ALGORITHMS["jetCoreRegionalStep"]

    # Z -> ee: the two leading tracks of each event are the electrons, true and prompt.
    is_electron = (process == "zee") & (rank < 2) & (counts[evt] >= 2)
    it[is_electron] = names.index("initialStep")
    algo[is_electron] = ALGORITHMS["initialStep"]
    is_true |= is_electron

    # Latent "badness": how far a track is from a clean, fully measured trajectory. True tracks
    # are mostly clean (a few suffer material interactions or wrong hits), fakes spread widely.
    # Every quality feature depends on it plus its own noise: no feature alone separates.
    badness = np.where(
        is_true,
        np.where(rng.random(n) < 0.07, rng.uniform(0.6, 2.0, n), np.abs(rng.normal(0, 0.35, n))),
        rng.gamma(2.5, 0.45, n),
    )

    # --- kinematics ---------------------------------------------------------------------------
    pt_index = np.where(is_true, proc.pt_index, proc.pt_index + 0.9)  # fakes are softer
    pt_index = np.where(is_jetcore, 2.6, pt_index)
    pt = table["pt_min"][it] * (0.9 + 0.1 * rng.random(n)) * rng.random(n) ** (-1 / (pt_index - 1))
    straight = ~is_true & (rng.random(n) < 0.03)  # high-pt fakes from aligned random hits
    pt = np.where(straight, 10 ** rng.uniform(0.7, 2.5, n), pt)
    pt = np.where(
        is_electron, 45.6 * np.sqrt(1 - rng.uniform(-1, 1, n) ** 2) * rng.normal(1, 0.08, n), pt
    )
    pt = np.clip(pt, 0.1, 3000.0)

    forward = rng.random(n) < np.where(is_true, table["forward"][it], 0.65)
    abs_eta = np.where(forward, rng.uniform(1.2, 2.5, n), rng.uniform(0.0, 1.2, n))
    eta = abs_eta * rng.choice([-1.0, 1.0], n)
    phi = rng.uniform(-np.pi, np.pi, n)
    # jetCore tracks sit in the core of a dense, central jet of their event.
    jet_eta, jet_phi = rng.uniform(-1.3, 1.3, events), rng.uniform(-np.pi, np.pi, events)
    eta = np.where(is_jetcore, jet_eta[evt] + rng.normal(0, 0.08, n), eta)
    phi = np.where(is_jetcore, jet_phi[evt] + rng.normal(0, 0.08, n), phi)
    phi = _wrap(phi)
    q = rng.choice(np.array([-1, 1], dtype=np.int32), n)

    # --- origin: vertex and displacement ------------------------------------------------------
    from_hard = rng.random(n) < n_hard[evt] / np.maximum(counts[evt], 1)
    pu_pick = (rng.random(n) * n_pu_vtx[evt]).astype(np.int64)
    raw_vertex = raw_off[evt] + np.where(from_hard | (n_pu_vtx[evt] == 0), 0, 1 + pu_pick)

    displaced_frac = table["displaced"][it].copy()
    boosted = np.isin(it, [names.index(k) for k in DISPLACED_ITERATIONS])
    displaced_frac[boosted] = np.minimum(displaced_frac[boosted] * proc.displaced_boost, 1.0)
    radius_scale = table["radius"][it] * np.where(boosted, proc.displaced_boost, 1.0)
    is_displaced = is_true & ~is_electron & (rng.random(n) < displaced_frac)
    r_prod = np.where(is_displaced, np.minimum(rng.exponential(radius_scale), 65.0), 0.0)
    # Decay products point roughly away from the beam line: |dxy| is a fraction of the radius.
    dxy_true = r_prod * np.sin(rng.normal(0, 0.45, n))
    dz_true = r_prod * rng.normal(0, 0.3, n) * (1 + np.abs(np.sinh(eta)))

    # --- hit pattern --------------------------------------------------------------------------
    # Layer counts by binary search in the sorted radii (np.searchsorted = "how many below").
    pixel_avail = 4 - np.searchsorted(PIXEL_RADII, r_prod, side="right")
    # Inverse-CDF draw from each iteration's P(nPixelLay): row k of the table shifted by k.
    cum = np.cumsum([ITERATIONS[k].pixel_layers for k in names], axis=1)
    cum = (cum / cum[:, -1:])[:, :-1] + np.arange(len(names))[:, None]
    planned_pixel = np.searchsorted(cum.ravel(), it + rng.random(n)) - 4 * it
    n_pixel_lay = np.minimum(planned_pixel, pixel_avail)
    n_pixel_lay = np.where(
        is_true, n_pixel_lay, np.maximum(n_pixel_lay - (rng.random(n) < 0.15), 0)
    )

    # Strip layers reachable: loopers (2 R_curvature < tracker radius) stop early; forward tracks
    # cross TID/TEC disks, very forward ones fewer; displaced ones miss the layers inside r_prod.
    diameter_cm = 2 * pt / BFIELD_CURVATURE * 100
    reach = np.searchsorted(STRIP_RADII, diameter_cm)
    geometry = np.interp(abs_eta, [0.0, 1.0, 1.8, 2.5], [10, 11, 11, 5])
    inside = np.searchsorted(STRIP_RADII, r_prod)
    strip_avail = np.maximum(np.round(geometry * reach / 10.0) - inside, 0).astype(np.int64)
    # Building stops early for some true tracks and for most fakes (the rest is MISSING_OUTER).
    stop_prob = np.clip(np.where(is_true, 0.12, 0.35) + 0.2 * badness, 0, 0.95)
    stops = rng.random(n) < stop_prob
    kept_frac = np.where(stops, rng.beta(2.0, 1.5 + badness, n), 1.0)
    n_strip_lay = np.round(strip_avail * kept_frac).astype(np.int64)
    no_pixel_seed = np.array([ITERATIONS[k].pixel_layers[0] > 0.5 for k in names])[it]
    min_strip = np.where(no_pixel_seed, 5, np.maximum(3 - n_pixel_lay, 0))
    n_strip_lay = np.maximum(n_strip_lay, np.minimum(min_strip, 14))
    n_outer_missing = np.where(stops, np.maximum(strip_avail - n_strip_lay, 0), 0)

    # Pixel layers the track crossed without a hit: inner ones are MISSING_INNER, others LOST.
    missing_pixel = np.maximum(pixel_avail - n_pixel_lay, 0)
    inner_pixel_missing = rng.binomial(missing_pixel, np.where(no_pixel_seed, 0.9, 0.5))
    lost_pixel = missing_pixel - inner_pixel_missing
    inactive_flag = rng.random(n) < 0.12  # part of the missing hits are in dead modules
    n_inner_inactive = rng.poisson(np.where(is_true, 0.03, 0.08), n) + np.where(
        inactive_flag, inner_pixel_missing.clip(0, 1), 0
    )
    n_inner_lost = np.maximum(inner_pixel_missing - np.where(inactive_flag, 1, 0), 0)
    n_inner_lost += rng.poisson(np.where(is_true, 0.05, 0.25 + 0.4 * badness), n)
    n_outer_lost = np.minimum(
        rng.binomial(n_outer_missing, 0.8) + rng.poisson(np.where(is_true, 0.1, 0.3), n), 14
    )
    n_outer_inactive = rng.poisson(np.where(is_true, 0.06, 0.12), n)
    n_lost = lost_pixel + rng.poisson(np.where(is_true, 0.10, 0.25) + 0.45 * badness, n)
    n_lost_lay = n_lost - rng.binomial(n_lost, 0.1)
    n_inactive = rng.poisson(0.05, n)

    n_stereo = rng.binomial(n_strip_lay, 0.38)  # glued double-sided layers give two strip hits
    n_pixel = n_pixel_lay + rng.binomial(n_pixel_lay, 0.12)  # overlapping modules
    n_strip = n_strip_lay + n_stereo
    n_3d_lay = n_pixel_lay + n_stereo
    ndof = 2.0 * n_pixel + n_strip - 5.0
    n_layers = n_pixel_lay + n_strip_lay

    # Radii of the first and last hit, for the inner/outer momentum.
    first_layer = np.searchsorted(LAYER_RADII, r_prod, side="right") + inner_pixel_missing
    first_layer = np.where(n_pixel_lay == 0, 4 + inside, first_layer)
    last_layer = np.minimum(first_layer + n_layers + n_lost - 1, len(LAYER_RADII) - 1)
    first_layer = np.minimum(first_layer, len(LAYER_RADII) - 1)
    endcap_radius = 280.0 / np.maximum(np.abs(np.sinh(eta)), 1e-3)  # the tracker ends at |z| 2.8 m
    r_first = np.minimum(LAYER_RADII[first_layer], endcap_radius)
    r_last = np.maximum(np.minimum(LAYER_RADII[last_layer], endcap_radius), r_first)

    # --- resolutions --------------------------------------------------------------------------
    sin_theta = 1 / np.cosh(eta)
    lever = (14.0 / np.maximum(n_layers, 3)) ** 1.5  # short tracks measure pt badly
    pixel_factor = np.array([8.0, 3.0, 1.6, 1.15, 1.0])[n_pixel_lay] * (1 + r_first / 30)

    def smear(scale: float) -> np.ndarray:
        # Error inflation of a bad track: shared latent badness, own noise.
        return np.exp(scale * badness + rng.normal(0, 0.15, n))

    rel_pt_err = np.hypot(1.5e-4 * pt, 0.008) * (1 + 0.25 * eta**2) * lever * smear(0.35)
    rel_pt_err = np.where(straight, rng.uniform(0.3, 2.0, n), rel_pt_err)
    pt_err = pt * rel_pt_err
    dxy_err = np.hypot(0.0012, 0.0095 / (pt * np.sqrt(sin_theta))) * pixel_factor * smear(0.25)
    dz_err = np.hypot(0.0025, 0.011 / (pt * sin_theta**1.3)) * pixel_factor * smear(0.25)
    phi_err = np.hypot(1e-4, 2.0e-3 / pt) * np.sqrt(lever * pixel_factor) * smear(0.25)
    lambda_err = (
        np.hypot(2e-4, 1.8e-3 / (pt * np.sqrt(sin_theta))) * np.sqrt(pixel_factor) * smear(0.25)
    )
    eta_err = lambda_err * np.cosh(eta)

    # Measured parameters: trues scatter by their errors, fakes by more, some far off.
    pull = 1 + np.where(is_true, 0.3, 1.0) * badness
    dxy_v = dxy_true + rng.normal(0, 1, n) * dxy_err * pull
    dz_v = dz_true + rng.normal(0, 1, n) * dz_err * pull
    wide = ~is_true & (rng.random(n) < 0.45)
    fake_ip = np.maximum(0.5 * table["radius"][it], 0.05)
    dxy_v = np.where(wide, dxy_v + rng.laplace(0, fake_ip, n), dxy_v)
    dz_v = np.where(wide, dz_v + rng.laplace(0, 3 * fake_ip, n), dz_v)

    nchi2_scale = np.exp(0.45 * badness + rng.normal(0, 0.2, n))
    nchi2_scale = np.where(is_true & (rng.random(n) < 0.03), nchi2_scale * 3, nchi2_scale)
    dof = np.maximum(ndof, 1)
    nchi2 = rng.chisquare(dof) / dof * nchi2_scale
    nchi2_1d = nchi2 * rng.uniform(0.85, 1.0, n)

    # --- pathological outliers and loopers of real data ---------------------------------------
    outlier = rng.random(n) < OUTLIER_FRACTION
    kind = rng.integers(0, 6, n)
    huge_pt = outlier & (kind == 0)
    pt = np.where(huge_pt, 10 ** rng.uniform(3, 6.6, n), pt)
    pt_err = np.where(huge_pt, pt * 10 ** rng.uniform(1, 5.2, n), pt_err)
    nchi2 = np.where(outlier & (kind == 1), 10 ** rng.uniform(3, 7.3, n), nchi2)
    eta_err = np.where(outlier & (kind == 2), 10 ** rng.uniform(1, 2.93, n), eta_err)
    phi_err = np.where(outlier & (kind == 2), 10 ** rng.uniform(1, 3.3, n), phi_err)
    many_hits = outlier & (kind == 3) & (rng.random(n) < 0.7)  # loopers with every hit twice
    few_hits = outlier & (kind == 3) & ~many_hits  # 2-hit remnants, ndof -2
    n_pixel = np.where(many_hits, rng.integers(6, 16, n), np.where(few_hits, 1, n_pixel))
    n_strip = np.where(many_hits, rng.integers(30, 54, n), np.where(few_hits, 1, n_strip))
    ndof = np.where(many_hits | few_hits, np.minimum(2.0 * n_pixel + n_strip - 5, 68), ndof)
    n_pixel_lay, n_strip_lay = np.minimum(n_pixel_lay, n_pixel), np.minimum(n_strip_lay, n_strip)
    n_3d_lay = np.minimum(n_3d_lay, n_pixel_lay + n_strip_lay)
    lost_outlier = outlier & (kind == 4)
    n_inner_lost = np.where(lost_outlier, rng.integers(5, 15, n), n_inner_lost)
    n_outer_lost = np.where(lost_outlier, rng.integers(5, 15, n), n_outer_lost)
    no_vertex_outlier = outlier & (kind == 5)

    # --- momenta: reference, inner (first hit) and outer (last hit) states --------------------
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    p = pt * np.cosh(eta)
    # Ionisation loss (~15 MeV through the tracker, more in the forward material); electrons brem.
    loss = 0.015 * np.sqrt(np.cosh(eta)) * (1 + 0.5 * badness)
    outer_pt = pt * np.maximum(1 - loss / p, 0.5)
    outer_pt = np.where(is_electron, outer_pt * rng.uniform(0.4, 0.97, n), outer_pt)
    # The first- and last-hit states come from the same smoothed fit as the reference one: they
    # scatter about the helix by about the fit's own precision (the relative pt error), more for
    # fakes, whose wrong hits pull the fit apart along the track.
    state_scatter = np.minimum(rel_pt_err, 0.3) * np.where(is_true, 0.5, 1.0) * (1 + 0.5 * badness)
    outer_pt = outer_pt * np.exp(state_scatter * rng.normal(0, 1, n))
    inner_pt = pt * (1 - 0.001 / p) * np.exp(0.3 * state_scatter * rng.normal(0, 1, n))
    phi_inner = _bend(phi, q, pt, r_first)
    phi_outer = _bend(phi, q, pt, r_last)
    inner = (inner_pt * np.cos(phi_inner), inner_pt * np.sin(phi_inner), inner_pt * np.sinh(eta))
    outer = (outer_pt * np.cos(phi_outer), outer_pt * np.sin(phi_outer), outer_pt * np.sinh(eta))

    # --- vertices: keep those with >= 2 prompt true tracks ------------------------------------
    prompt = is_true & (np.abs(dxy_true) < 0.1)
    n_assoc = np.bincount(raw_vertex[prompt], minlength=len(raw_evt))
    failed_event = rng.random(events) < FAILED_VERTEX_FRACTION
    keep = (n_assoc >= 2) & ~failed_event[raw_evt]
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    local_index = kept_before[:-1] - kept_before[raw_off[:-1]][raw_evt]
    n_kept = np.bincount(raw_evt[keep], minlength=events)
    # An event without a good vertex still has one: the fake one at the beam spot (ndof 0).
    fake_vertex = n_kept == 0
    vtx_counts = np.where(fake_vertex, 1, n_kept).astype(np.int64)
    order = np.argsort(np.concatenate([raw_evt[keep], np.flatnonzero(fake_vertex)]), kind="stable")
    ndof_v = 2 * (0.85 * n_assoc[keep] + rng.normal(0, 0.3, keep.sum())) - 3
    vtx = {
        "vtx_x": np.concatenate([raw_x[keep], bsp[0][fake_vertex]])[order],
        "vtx_y": np.concatenate([raw_y[keep], bsp[1][fake_vertex]])[order],
        "vtx_z": np.concatenate([raw_z[keep], bsp[2][fake_vertex]])[order],
        "vtx_ndof": np.concatenate([np.maximum(ndof_v, 0.5), np.zeros(fake_vertex.sum())])[order],
    }
    vtx["vtx_chi2"] = vtx["vtx_ndof"] * rng.gamma(20, 1 / 20, len(vtx["vtx_ndof"]))
    vtx_off = np.concatenate([[0], np.cumsum(vtx_counts)])

    # Track reference point: displaced from its vertex by (dxy_v, dz_v), then moved along the
    # track to the point of closest approach to the beam spot (as for generalTracks).
    x = raw_x[raw_vertex] - dxy_v * np.sin(phi)
    y = raw_y[raw_vertex] + dxy_v * np.cos(phi)
    z = raw_z[raw_vertex] + dz_v
    along = (x - bsp[0][evt]) * np.cos(phi) + (y - bsp[1][evt]) * np.sin(phi)
    x, y, z = x - along * np.cos(phi), y - along * np.sin(phi), z - along * np.sinh(eta)
    bs_point = (bsp[0][evt], bsp[1][evt], bsp[2][evt])
    dxy, dz = _dxy_dz(x, y, z, px, py, pz, pt, bs_point)
    first_vtx = vtx_off[:-1][evt]
    pv_point = (vtx["vtx_x"][first_vtx], vtx["vtx_y"][first_vtx], vtx["vtx_z"][first_vtx])
    dxy_pv, dz_pv = _dxy_dz(x, y, z, px, py, pz, pt, pv_point)

    # Closest good vertex in z (the kept ones; the beam-spot fake vertex is not good).
    good_global = vtx_off[:-1][raw_evt[keep]] + local_index[keep]
    best = _closest_vertex(evt, z, raw_evt[keep], raw_z[keep], good_global)
    has_pv = (best >= 0) & ~no_vertex_outlier
    closest = tuple(
        np.where(has_pv, vtx[k][np.maximum(best, 0)], none)
        for k, none in zip(("vtx_x", "vtx_y", "vtx_z"), NO_VERTEX, strict=True)
    )
    dxy_closest, dz_closest = _dxy_dz(x, y, z, px, py, pz, pt, closest)
    dz_closest = np.where(no_vertex_outlier & (rng.random(n) < 0.5), -99999.0, dz_closest)

    # Vertex the track was fitted in: most prompt true tracks of a kept vertex, few others.
    in_vertex = keep[raw_vertex] & np.where(prompt, rng.random(n) < 0.92, rng.random(n) < 0.1)
    vtx_idx = np.where(in_vertex, local_index[raw_vertex], -1)

    # --- simulation matching ------------------------------------------------------------------
    n_valid = n_pixel + n_strip
    sim = _sim_matches(rng, evt, events, is_true, n_valid, badness)
    best_sim, shared, best_nchi2, sim_counts, sim_idx, sim_frac = sim

    # --- the old classifier and its working points --------------------------------------------
    mva = _old_classifier(
        rng, nchi2, n_lost_lay, n_outer_lost, n_inner_lost, dz_closest, dz_err, pt_err, pt
    )
    cuts = np.array([ITERATIONS[k].cuts for k in names])[it]
    # Bits loose (1), tight (2), highPurity (4); the cuts are ordered, so the bits nest.
    quality = (mva > cuts[:, 0]) * 1 + (mva > cuts[:, 1]) * 2 + (mva > cuts[:, 2]) * 4
    is_hp = (mva > cuts[:, 2]).astype(np.int16)

    # Merged duplicates keep their original iteration but become algo 2; some tracks were found
    # by a second iteration too (algoMask).
    merged = rng.random(n) < 0.02
    other = ITERATION_CODES[rng.integers(0, 12, n)].astype(np.uint64)
    algo_mask = (np.uint64(1) << algo.astype(np.uint64)) | np.where(
        merged | (rng.random(n) < 0.08), np.uint64(1) << other, np.uint64(0)
    )
    looper = diameter_cm < STRIP_RADII[-1]
    stop_reason = np.where(stops, rng.choice([2, 3, 4], n), 255)
    stop_reason = np.where(looper & ~stops, 7, stop_reason)

    tracks = {
        "trk_px": px,
        "trk_py": py,
        "trk_pz": pz,
        "trk_pt": pt,
        "trk_inner_px": inner[0],
        "trk_inner_py": inner[1],
        "trk_inner_pz": inner[2],
        "trk_inner_pt": np.hypot(inner[0], inner[1]),
        "trk_outer_px": outer[0],
        "trk_outer_py": outer[1],
        "trk_outer_pz": outer[2],
        "trk_outer_pt": np.hypot(outer[0], outer[1]),
        "trk_eta": eta,
        "trk_lambda": np.arctan(np.sinh(eta)),
        "trk_cotTheta": np.sinh(eta),
        "trk_phi": phi,
        "trk_dxy": dxy,
        "trk_dz": dz,
        "trk_dxyPV": dxy_pv,
        "trk_dzPV": dz_pv,
        "trk_dxyClosestPV": dxy_closest,
        "trk_dzClosestPV": dz_closest,
        "trk_ptErr": pt_err,
        "trk_etaErr": eta_err,
        "trk_lambdaErr": lambda_err,
        "trk_phiErr": phi_err,
        "trk_dxyErr": dxy_err,
        "trk_dzErr": dz_err,
        "trk_refpoint_x": x,
        "trk_refpoint_y": y,
        "trk_refpoint_z": z,
        "trk_nChi2": nchi2,
        "trk_nChi2_1Dmod": nchi2_1d,
        "trk_ndof": ndof,
        "trk_mva": mva,
        "trk_bestSimTrkShareFrac": shared,
        "trk_bestSimTrkNChi2": best_nchi2,
        "trk_nValid": n_valid,
        "trk_nLost": n_lost,
        "trk_nInactive": n_inactive,
        "trk_nPixel": n_pixel,
        "trk_nStrip": n_strip,
        "trk_nOuterLost": n_outer_lost,
        "trk_nInnerLost": n_inner_lost,
        "trk_nOuterInactive": n_outer_inactive,
        "trk_nInnerInactive": n_inner_inactive,
        "trk_nPixelLay": n_pixel_lay,
        "trk_nStripLay": n_strip_lay,
        "trk_n3DLay": n_3d_lay,
        "trk_nLostLay": n_lost_lay,
        "trk_nCluster": n_valid,
        "trk_algo": np.where(merged, ALGORITHMS["duplicateMerge"], algo),
        "trk_originalAlgo": algo,
        "trk_q": q,
        "trk_vtxIdx": vtx_idx,
        "trk_bestSimTrkIdx": best_sim,
        "trk_stopReason": stop_reason,
        "trk_qualityMask": quality,
        "trk_isHP": is_hp,
        "trk_algoMask": algo_mask,
    }
    arrays = {
        name: np.asarray(tracks[name]).astype(dtype) for name, dtype in TRACK_BRANCHES.items()
    }
    arrays["trk_isTrue"] = is_true.astype(np.int16)

    # A few NaN, as real ntuples have: after everything else, so they do not propagate.
    nan_rows = np.flatnonzero(rng.random(n) < NAN_FRACTION)
    nan_branch = rng.integers(0, len(NAN_BRANCHES), len(nan_rows))
    for k, name in enumerate(NAN_BRANCHES):
        arrays[name][nan_rows[nan_branch == k]] = np.nan

    arrays["simTrkIdx_counts"] = sim_counts
    arrays["simTrkIdx_flat"] = sim_idx
    arrays["simTrkShareFrac_flat"] = sim_frac
    arrays["event"] = np.arange(first_event, first_event + events, dtype=np.uint64)
    arrays["lumi"] = (1 + (arrays["event"] - 1) // 500).astype(np.uint32)
    arrays["run"] = np.ones(events, dtype=np.uint32)
    for name, values in zip(BEAMSPOT_BRANCHES, bsp, strict=True):
        arrays[name] = values.astype(np.float32)
    arrays["vtx_counts"] = vtx_counts
    for name in VERTEX_BRANCHES:
        arrays[name] = vtx[name].astype(np.float32)
    return counts, arrays


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _check_options(label: str, compression: str, writer: str) -> str:
    """Validate the options; returns the concrete writer ("uproot" or "root")."""
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r} (--label): choose one of {LABELS}")
    if compression not in COMPRESSION_LEVELS:
        raise ValueError(
            f"unknown compression {compression!r} (--compression): "
            f"choose one of {tuple(COMPRESSION_LEVELS)}"
        )
    if writer not in WRITERS:
        raise ValueError(f"unknown writer {writer!r} (--writer): choose one of {WRITERS}")
    if writer == "auto":
        return "uproot" if label == "trk_isTrue" else "root"
    if writer == "uproot" and label == "trk_simTrkIdx":
        raise ValueError(
            "uproot cannot write the std::vector<std::vector<int>> branch trk_simTrkIdx: "
            "use --writer root (or auto) with --label trk_simTrkIdx, or --label trk_isTrue"
        )
    return writer


def _temporary_path(path: Path, suffix: str) -> Path:
    """A unique hidden name next to ``path`` (same disk, so the final rename is atomic).

    Not created here: the writer creates it with the usual permissions (mkstemp's are 0600).
    """
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def _write_uproot(path: Path, counts: np.ndarray, arrays: dict[str, np.ndarray], codec) -> None:
    """Counter-based jagged branches (ntrk + trk_*, nvtx + vtx_*), in chunks of ~100k tracks."""
    track_names = list(TRACK_BRANCHES) + ["trk_isTrue"]
    trk_off = np.concatenate([[0], np.cumsum(counts)])
    vtx_off = np.concatenate([[0], np.cumsum(arrays["vtx_counts"])])
    events = len(counts)
    # Whole events per basket, about 100k tracks each, so the baskets stay a few hundred kB.
    per_chunk = max(1, int(100_000 * events / max(int(counts.sum()), 1)))
    with uproot.recreate(path, compression=codec) as file:
        tree = None
        for start in range(0, max(events, 1), per_chunk):
            stop = min(start + per_chunk, events)
            t0, t1, v0, v1 = trk_off[start], trk_off[stop], vtx_off[start], vtx_off[stop]
            chunk = {name: arrays[name][start:stop] for name in EVENT_BRANCHES}
            # Record fields "trk"."pt" become the branches trk_pt with one counter ntrk.
            chunk["trk"] = ak.zip(
                {
                    name[4:]: ak.unflatten(arrays[name][t0:t1], counts[start:stop])
                    for name in track_names
                }
            )
            chunk["vtx"] = ak.zip(
                {
                    name[4:]: ak.unflatten(arrays[name][v0:v1], arrays["vtx_counts"][start:stop])
                    for name in VERTEX_BRANCHES
                }
            )
            chunk.update({name: arrays[name][start:stop] for name in BEAMSPOT_BRANCHES})
            if tree is None:
                types = {
                    k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in chunk.items()
                }
                tree = file.mktree(f"{TREE_DIR}/{TREE_NAME}", types)
            tree.extend(chunk)


# The C++ side of the ROOT writer: books the branches of the CMSSW layout in the given order and
# fills one entry per event straight from the flat numpy buffers (no Python loop per event).
_ROOT_WRITER_CPP = r"""
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>
#include "TFile.h"
#include "TTree.h"

namespace make_ntuples {

struct Column {
  virtual ~Column() = default;
  virtual void load(Long64_t event) = 0;
};

// One value per event (event, lumi, run, bsp_*).
template <typename T>
struct Scalar : Column {
  const T* src;
  T value{};
  Scalar(TTree* tree, const char* name, const void* data, const int64_t*, const int64_t*)
      : src(static_cast<const T*>(data)) { tree->Branch(name, &value); }
  void load(Long64_t e) override { value = src[e]; }
};

// std::vector<T>: entries offsets[e] .. offsets[e+1] of the flat array.
template <typename T>
struct Vector : Column {
  const T* src;
  const int64_t* offsets;
  std::vector<T> value;
  Vector(TTree* tree, const char* name, const void* data, const int64_t* outer, const int64_t*)
      : src(static_cast<const T*>(data)), offsets(outer) { tree->Branch(name, &value); }
  void load(Long64_t e) override { value.assign(src + offsets[e], src + offsets[e + 1]); }
};

// std::vector<std::vector<T>>: per event its tracks, per track inner[i] .. inner[i+1].
template <typename T>
struct Nested : Column {
  const T* src;
  const int64_t* offsets;
  const int64_t* inner;
  std::vector<std::vector<T>> value;
  Nested(TTree* tree, const char* name, const void* data, const int64_t* outer, const int64_t* in)
      : src(static_cast<const T*>(data)), offsets(outer), inner(in) { tree->Branch(name, &value); }
  void load(Long64_t e) override {
    value.resize(offsets[e + 1] - offsets[e]);
    for (int64_t i = offsets[e]; i < offsets[e + 1]; ++i)
      value[i - offsets[e]].assign(src + inner[i], src + inner[i + 1]);
  }
};

template <template <typename> class C>
std::unique_ptr<Column> make(char type, TTree* tree, const std::string& name, const void* data,
                             const int64_t* outer, const int64_t* inner) {
  const char* n = name.c_str();
  switch (type) {
    case 'f': return std::make_unique<C<Float_t>>(tree, n, data, outer, inner);
    case 'I': return std::make_unique<C<UInt_t>>(tree, n, data, outer, inner);
    case 'i': return std::make_unique<C<Int_t>>(tree, n, data, outer, inner);
    case 'S': return std::make_unique<C<UShort_t>>(tree, n, data, outer, inner);
    case 's': return std::make_unique<C<Short_t>>(tree, n, data, outer, inner);
    case 'L': return std::make_unique<C<ULong64_t>>(tree, n, data, outer, inner);
  }
  throw std::runtime_error("make_ntuples: unknown element type for branch " + name);
}

// kinds[i] = shape ('e' scalar, 'v' vector, 'n' nested) + element type character above.
void write_tree(const std::string& path, int compression, Long64_t events,
                const std::vector<std::string>& names, const std::vector<std::string>& kinds,
                const uint64_t* data, const uint64_t* outer, const uint64_t* inner) {
  std::unique_ptr<TFile> file(TFile::Open(path.c_str(), "RECREATE", "", compression));
  if (!file || file->IsZombie()) throw std::runtime_error("make_ntuples: cannot create " + path);
  TDirectory* dir = file->mkdir("trackingNtuple");
  dir->cd();
  TTree* tree = new TTree("tree", "tree");  // owned by dir
  std::vector<std::unique_ptr<Column>> columns;
  for (size_t i = 0; i < names.size(); ++i) {
    auto* d = reinterpret_cast<const void*>(data[i]);
    auto* o = reinterpret_cast<const int64_t*>(outer[i]);
    auto* n = reinterpret_cast<const int64_t*>(inner[i]);
    const char shape = kinds[i][0], type = kinds[i][1];
    if (shape == 'e') columns.push_back(make<Scalar>(type, tree, names[i], d, o, n));
    else if (shape == 'v') columns.push_back(make<Vector>(type, tree, names[i], d, o, n));
    else columns.push_back(make<Nested>(type, tree, names[i], d, o, n));
  }
  for (Long64_t e = 0; e < events; ++e) {
    for (auto& c : columns) c->load(e);
    tree->Fill();
  }
  dir->cd();
  tree->Write();
  file->Close();
}

}  // namespace make_ntuples
"""
_ROOT_TYPE_CODES = {
    np.dtype(np.float32): "f",
    np.dtype(np.uint32): "I",
    np.dtype(np.int32): "i",
    np.dtype(np.uint16): "S",
    np.dtype(np.int16): "s",
    np.dtype(np.uint64): "L",
}


def _root_columns(counts: np.ndarray, arrays: dict[str, np.ndarray], label: str) -> list[tuple]:
    """(branch name, shape, values, outer offsets, inner offsets) in CMSSW's booking order."""
    trk_off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    vtx_off = np.concatenate([[0], np.cumsum(arrays["vtx_counts"])]).astype(np.int64)
    sim_off = np.concatenate([[0], np.cumsum(arrays["simTrkIdx_counts"])]).astype(np.int64)
    columns = [(name, "e", arrays[name], None, None) for name in EVENT_BRANCHES]
    columns += [(name, "v", arrays[name], trk_off, None) for name in TRACK_BRANCHES]
    if label == "trk_isTrue":
        columns.append(("trk_isTrue", "v", arrays["trk_isTrue"], trk_off, None))
    else:
        columns.append(("trk_simTrkIdx", "n", arrays["simTrkIdx_flat"], trk_off, sim_off))
        columns.append(
            ("trk_simTrkShareFrac", "n", arrays["simTrkShareFrac_flat"], trk_off, sim_off)
        )
    columns += [(name, "v", arrays[name], vtx_off, None) for name in VERTEX_BRANCHES]
    columns += [(name, "e", arrays[name], None, None) for name in BEAMSPOT_BRANCHES]
    return columns


def dictionary_cache(root_version: str, root_installation: Path) -> Path:
    """The folder of the compiled nested-vector dictionary of one ROOT installation."""
    key = hashlib.sha1(str(Path(root_installation).resolve()).encode()).hexdigest()[:12]
    cache_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "make_ntuples"
    return cache_root / f"root-{root_version}-{key}-nested-vector-dictionary"


def _load_nested_vector_dictionary(ROOT) -> None:
    """Load the dictionary of std::vector<std::vector<int/float>>, compiling it the first time.

    ROOT from PyPI ships none, and TTree does not book such a branch without one (it prints an
    error and leaves the branch out). ACLiC compiles it with the system's C++ compiler, once:
    the library is cached in ~/.cache/make_ntuples (or $XDG_CACHE_HOME/make_ntuples), one per
    ROOT installation, because ACLiC links it against the libraries of the environment that
    built it (ROOT's, numpy's). A cached library that no longer loads is rebuilt.
    """
    names = ("vector<vector<int> >", "vector<vector<float> >")
    if ROOT.TClass.GetClass(names[0]).HasDictionary():
        return
    cache = dictionary_cache(ROOT.gROOT.GetVersion(), Path(ROOT.__file__).parent)
    cache_root = cache.parent
    libraries = sorted(cache.glob("*.so"))
    if libraries:
        ROOT.gInterpreter.AddIncludePath(str(cache))  # the library #includes its source
        if ROOT.gSystem.Load(str(libraries[0])) < 0:
            print(
                f"make_ntuples: the cached dictionary in {cache} does not load; rebuilding it",
                file=sys.stderr,
            )
            shutil.rmtree(cache, ignore_errors=True)
            libraries = []
    if not libraries:
        cache_root.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(dir=cache_root, prefix=".build-"))
        cwd = os.getcwd()
        os.chdir(build)  # ACLiC writes its sources and library into the working directory
        try:
            ROOT.gInterpreter.GenerateDictionary(";".join(names), "vector")
        finally:
            os.chdir(cwd)
        try:
            os.rename(build, cache)  # atomic: a concurrent build that finished first wins
        except OSError:
            shutil.rmtree(build, ignore_errors=True)
    for name in names:
        if not ROOT.TClass.GetClass(name).HasDictionary():
            raise RuntimeError(
                f"ROOT has no dictionary for {name}, needed for the trk_simTrkIdx branches, and "
                f"could not compile one into {cache} (ACLiC needs a C++ compiler: "
                "`apt-get install g++`); or write label trk_isTrue with --label trk_isTrue"
            )


def _root_child_main() -> None:
    """Child process of the ROOT writer: reads jobs (JSON lines) on stdin, acks on stdout.

    Only this process imports ROOT. Its own stdout is redirected to stderr so that ROOT's
    messages cannot mix with the acknowledgements.
    """
    acks = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    try:
        import warnings

        # The PyPI build of ROOT warns that it is an alpha release, on every import.
        warnings.filterwarnings("ignore", message=r"\s*This distribution of ROOT is in alpha")
        import ROOT
    except ImportError as err:
        acks.write(json.dumps({"error": f"{ROOT_MISSING} ({err})"}) + "\n")
        return
    ROOT.gROOT.SetBatch(True)
    ROOT.gErrorIgnoreLevel = ROOT.kWarning  # no "Info in <ACLiC>" chatter, errors still shown
    ROOT.gInterpreter.Declare(_ROOT_WRITER_CPP)
    for line in sys.stdin:
        job = json.loads(line)
        try:
            with np.load(job["npz"]) as npz:
                data = {k: np.ascontiguousarray(npz[k]) for k in npz.files}
            counts = data.pop("counts")
            if job["label"] == "trk_simTrkIdx":
                _load_nested_vector_dictionary(ROOT)
            # `columns` holds every buffer alive while C++ reads it through raw addresses.
            columns = _root_columns(counts, data, job["label"])

            def address(a):
                return 0 if a is None else a.ctypes.data

            names = ROOT.std.vector["std::string"]([c[0] for c in columns])
            kinds = ROOT.std.vector["std::string"](
                [c[1] + _ROOT_TYPE_CODES[c[2].dtype] for c in columns]
            )
            pointers = [
                np.array([address(c[k]) for c in columns], dtype=np.uint64) for k in (2, 3, 4)
            ]
            compression = (
                ROOT_ALGORITHM_CODES[job["compression"]] * 100
                + COMPRESSION_LEVELS[job["compression"]]
            )
            ROOT.make_ntuples.write_tree(
                job["out"], compression, len(counts), names, kinds, *pointers
            )
            acks.write(json.dumps({"ok": job["out"]}) + "\n")
        except Exception as err:  # report and go on: the parent decides what to do
            acks.write(json.dumps({"error": f"{type(err).__name__}: {err}"}) + "\n")


def _root_child_command() -> list[str]:
    """The command line of the ROOT writer child: this module's _root_child_main."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
        "import make_ntuples; make_ntuples._root_child_main()"
    )
    return [sys.executable, "-c", code]


class _RootWriterProcess:
    """The ROOT writer child: one process for many files, PyROOT never in this process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            _root_child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def submit(self, npz: Path, out: Path, label: str, compression: str) -> None:
        job = {"npz": str(npz), "out": str(out), "label": label, "compression": compression}
        with contextlib.suppress(BrokenPipeError):  # the child is gone: wait() reports why
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()

    def wait(self) -> None:
        """Wait for the oldest submitted file; raises RuntimeError when it failed."""
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(
                f"the ROOT writer process ended unexpectedly (exit code {code}); "
                "see its messages above, or use --writer uproot --label trk_isTrue"
            )
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"ROOT writer: {reply['error']}")

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> _RootWriterProcess:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self.process.kill()  # interrupted: do not let it finish a file nobody wants
        self.close()


def _save_npz(path: Path, counts: np.ndarray, arrays: dict[str, np.ndarray]) -> Path:
    """Arrays for the ROOT child, uncompressed (writing them must cost little)."""
    npz = _temporary_path(path, ".npz")
    with open(npz, "wb") as f:
        np.savez(f, counts=counts, **arrays)
    return npz


def write_ntuple(
    path: str | os.PathLike,
    counts: np.ndarray,
    arrays: dict[str, np.ndarray],
    *,
    label: str = "trk_isTrue",
    compression: str = "ZLIB",
    writer: str = "auto",
) -> Path:
    """Write one trackingNtuple file from ``generate_events`` output; returns its path.

    The file is written under a temporary name in the same folder and renamed at the end, so
    a half-written file never exists under ``path`` (also on errors and Ctrl-C).
    """
    writer = _check_options(label, compression, writer)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist (--out)")
    tmp = _temporary_path(path, ".tmp")
    npz = None
    try:
        if writer == "uproot":
            codec = getattr(uproot, compression)(COMPRESSION_LEVELS[compression])
            _write_uproot(tmp, counts, arrays, codec)
        else:
            npz = _save_npz(path, counts, arrays)
            with _RootWriterProcess() as child:
                child.submit(npz, tmp, label, compression)
                child.wait()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        if npz is not None:
            npz.unlink(missing_ok=True)
    return path


def generate_sample(
    out_dir: str | os.PathLike,
    process: str,
    events: int,
    seed: int,
    label: str = "trk_isTrue",
    events_per_file: int = 100,
    compression: str = "ZLIB",
    writer: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Generate a sample as files ``<process>_<seed>_<k>.root`` in ``out_dir``; returns them.

    File k is generated from (seed, k): deterministic, and different from the other files.
    With the ROOT writer one child process writes file k while this one generates file k+1.
    """
    writer = _check_options(label, compression, writer)
    if events < 1:
        raise ValueError(f"--events must be >= 1, got {events}")
    if events_per_file < 1:
        raise ValueError(f"--events-per-file must be >= 1, got {events_per_file}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, events, events_per_file))
    paths = [out_dir / f"{process}_{seed}_{k}.root" for k in range(len(starts))]
    start_time, tracks = time.perf_counter(), 0
    bar = tqdm(total=events, unit="evt", desc=f"{process} -> {out_dir}", disable=not progress)
    pending: list[tuple[Path, Path, Path]] = []  # (final, temporary, npz) submitted to ROOT
    child = _RootWriterProcess() if writer == "root" else None
    try:
        for k, (start, path) in enumerate(zip(starts, paths, strict=True)):
            n_events = min(events_per_file, events - start)
            counts, arrays = generate_events(
                process, n_events, seed, file_index=k, first_event=start + 1
            )
            tracks += int(counts.sum())
            if child is None:
                write_ntuple(
                    path, counts, arrays, label=label, compression=compression, writer=writer
                )
            else:
                tmp, npz = _temporary_path(path, ".tmp"), _save_npz(path, counts, arrays)
                pending.append((path, tmp, npz))
                child.submit(npz, tmp, label, compression)
                if len(pending) > 1:  # keep one file in flight while generating the next
                    _finish(child, pending.pop(0))
            bar.update(n_events)
        while pending:
            _finish(child, pending.pop(0))
    finally:
        bar.close()
        if child is not None:
            if pending:
                child.process.kill()
            child.close()
        for _, tmp, npz in pending:
            tmp.unlink(missing_ok=True)
            npz.unlink(missing_ok=True)
    elapsed = time.perf_counter() - start_time
    if progress:
        print(
            f"{process}: {events} events, {tracks} tracks in {len(paths)} files in {out_dir} "
            f"({tracks / max(elapsed, 1e-9):,.0f} tracks/s, {writer} writer, {compression})"
        )
    return paths


def _finish(child: _RootWriterProcess, job: tuple[Path, Path, Path]) -> None:
    """Wait for one file of the ROOT child and move it to its final name."""
    path, tmp, npz = job
    try:
        child.wait()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        npz.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--events", type=int, required=True, help="number of events")
    parser.add_argument("--process", required=True, choices=PROCESS_NAMES)
    parser.add_argument("--seed", type=int, required=True, help="random seed (>= 0)")
    parser.add_argument(
        "--label",
        default="trk_isTrue",
        choices=LABELS,
        help="label convention: trk_isTrue branch, or trk_simTrkIdx (needs ROOT)",
    )
    parser.add_argument("--compression", default="ZLIB", choices=tuple(COMPRESSION_LEVELS))
    parser.add_argument("--events-per-file", type=int, default=100)
    parser.add_argument(
        "--writer",
        default="auto",
        choices=WRITERS,
        help="auto: uproot for trk_isTrue, root for trk_simTrkIdx",
    )
    args = parser.parse_args(argv)
    try:
        generate_sample(
            args.out,
            args.process,
            args.events,
            args.seed,
            label=args.label,
            events_per_file=args.events_per_file,
            compression=args.compression,
            writer=args.writer,
        )
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        parser.exit(2, f"make_ntuples.py: error: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, "make_ntuples.py: interrupted (no partial file was left)\n")


if __name__ == "__main__":
    main()
