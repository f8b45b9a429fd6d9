"""Per-iteration and per-process parameters of the synthetic sample.

The iterations follow CMS's Phase-1 iterative tracking: what each one seeds from, where its
seeding region lets tracks (and fakes) start, its pt reach, its share of the tracks and its fake
fraction before any classifier cut (the qualityCuts of the ntuple production are -100).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmssw.ntuple import ALGORITHMS


@dataclass(frozen=True)
class Iteration:
    weight: float  # population in qcd (normalised per process)
    fake: float  # fake fraction at the reference occupancy
    pt_min: float  # GeV, where the seeding starts to be efficient
    displaced: float  # fraction of true tracks from secondary decays and interactions
    radius: float  # mean production radius of those, cm
    pixel_layers: tuple[float, ...]  # P(nPixelLay = 0..4) given by the seeding
    forward: float  # fraction of true tracks with |eta| > 1.2 (0.52 is flat in eta)
    cuts: tuple[float, float, float]  # mva working points loose, tight, highPurity
    origin_radius: float  # cm, transverse size of the seeding region
    origin_half_length: float  # cm, its half-length along z
    first_strip: int  # first strip layer of strip-seeded tracks (TIB/TID 0, TOB/TEC 4)
    min_hits: int  # minimumNumberOfHits of the trajectory filter
    ghost: float  # fraction of the fakes assembled from pieces of real particles


# fmt: off
ITERATIONS = {
    #                       weight  fake pt_min displ radius pixel layers P(0..4)          fwd
    #                      (cuts), origin_radius, origin_half_length, first_strip, min_hits, ghost
    "initialStep": Iteration(0.450, 0.03, 0.45, 0.08, 0.15, (0, 0, 0, 0.05, 0.95), 0.50,
                             (-0.35, 0.10, 0.28), 0.02, 15.0, 0, 3, 0.12),
    "lowPtQuadStep": Iteration(0.130, 0.08, 0.15, 0.10, 0.20, (0, 0, 0, 0.05, 0.95), 0.52,
                               (-0.37, 0.08, 0.28), 0.02, 15.0, 0, 3, 0.10),
    "highPtTripletStep": Iteration(0.085, 0.06, 0.55, 0.08, 0.20, (0, 0, 0, 0.55, 0.45), 0.52,
                                   (-0.26, 0.20, 0.42), 0.02, 15.0, 0, 3, 0.12),
    "lowPtTripletStep": Iteration(0.070, 0.12, 0.20, 0.12, 0.30, (0, 0, 0, 0.60, 0.40), 0.52,
                                  (-0.23, 0.03, 0.15), 0.02, 15.0, 0, 3, 0.10),
    "detachedQuadStep": Iteration(0.060, 0.15, 0.30, 0.60, 1.00, (0, 0, 0, 0.08, 0.92), 0.50,
                                  (-0.62, -0.09, 0.24), 1.5, 15.0, 0, 3, 0.10),
    "detachedTripletStep": Iteration(0.050, 0.20, 0.25, 0.70, 1.50, (0, 0, 0.05, 0.60, 0.35),
                                     0.50, (-0.32, 0.24, 0.50), 1.5, 15.0, 0, 3, 0.10),
    "pixelPairStep": Iteration(0.042, 0.18, 0.60, 0.20, 0.50, (0, 0, 0.45, 0.40, 0.15), 0.45,
                               (-0.38, -0.23, -0.09), 0.015, 15.0, 0, 3, 0.12),
    "mixedTripletStep": Iteration(0.034, 0.30, 0.40, 0.70, 4.00, (0, 0.25, 0.40, 0.30, 0.05),
                                  0.60, (-0.83, -0.63, -0.38), 1.5, 15.0, 0, 3, 0.08),
    "pixelLessStep": Iteration(0.026, 0.35, 0.40, 0.80, 8.00, (0.80, 0.10, 0.07, 0.03, 0), 0.70,
                               (-0.60, -0.40, -0.20), 1.0, 12.0, 0, 4, 0.06),
    "tobTecStep": Iteration(0.020, 0.40, 0.55, 0.85, 15.0, (0.85, 0.08, 0.05, 0.02, 0), 0.50,
                            (-0.76, -0.65, -0.55), 5.0, 30.0, 4, 5, 0.06),
    "jetCoreRegionalStep": Iteration(0.008, 0.25, 15.0, 0.20, 0.30, (0, 0, 0.10, 0.40, 0.50),
                                     0.15, (-0.62, -0.49, 0.05), 0.1, 0.2, 0, 4, 0.60),
    "displacedRegionalStep": Iteration(0.001, 0.30, 1.00, 1.00, 20.0,
                                       (0.50, 0.20, 0.15, 0.10, 0.05), 0.50,
                                       (-0.66, -0.41, -0.16), 10.0, 30.0, 0, 4, 0.10),
    "muonSeededStepInOut": Iteration(0.004, 0.05, 2.00, 0.05, 0.10, (0, 0, 0.10, 0.40, 0.50),
                                     0.50, (-0.5, 0.0, 0.3), 0.1, 15.0, 0, 5, 0.30),
    "muonSeededStepOutIn": Iteration(0.002, 0.05, 2.00, 0.05, 0.10,
                                     (0.30, 0.10, 0.20, 0.20, 0.20), 0.50, (-0.5, 0.0, 0.3),
                                     0.1, 15.0, 4, 5, 0.30),
}
# fmt: on
NAMES = list(ITERATIONS)
ITERATION_CODES = np.array([ALGORITHMS[name] for name in ITERATIONS])
# Iterations whose true tracks are mostly secondaries; Process.displaced_boost scales them.
DISPLACED_ITERATIONS = (
    "detachedQuadStep",
    "detachedTripletStep",
    "mixedTripletStep",
    "pixelLessStep",
    "tobTecStep",
    "displacedRegionalStep",
)


def column(field: str) -> np.ndarray:
    """One field of every iteration, indexed like NAMES (float64, or int64 for integers)."""
    values = [getattr(ITERATIONS[name], field) for name in NAMES]
    return np.array(values, dtype=np.int64 if isinstance(values[0], int) else np.float64)


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
PROCESS_NAMES = tuple(PROCESSES)
