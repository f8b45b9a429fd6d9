"""What real ntuples hold beyond the physics: pathological fits, loopers, NaN, no vertex.

Rare (a few per 10k tracks), with the extreme values the sanitizer constants of CMS's 2020
production model show (pt up to ~4e6 GeV, nChi2 up to ~2e7, etaErr ~900, phiErr ~2000, ndof -2
to 68, nPixel up to 15, nStrip up to 53, lost hits up to 14, dz = -99999 without a vertex).
"""

from __future__ import annotations

import numpy as np

from synthetic.fit import Fit
from synthetic.hits import HitPattern
from synthetic.kinematics import Kinematics

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


def pathological_tracks(
    rng: np.random.Generator, kin: Kinematics, hp: HitPattern, fit: Fit
) -> np.ndarray:
    """Turn a few tracks into real data's outliers (in place); returns the tracks whose
    closest-vertex search is to find nothing."""
    n = len(kin.pt)
    outlier = rng.random(n) < OUTLIER_FRACTION
    kind = rng.integers(0, 6, n)
    huge_pt = outlier & (kind == 0)
    kin.pt = np.where(huge_pt, 10 ** rng.uniform(3, 6.6, n), kin.pt)
    fit.pt_err = np.where(huge_pt, kin.pt * 10 ** rng.uniform(1, 5.2, n), fit.pt_err)
    fit.nchi2 = np.where(outlier & (kind == 1), 10 ** rng.uniform(3, 7.3, n), fit.nchi2)
    fit.eta_err = np.where(outlier & (kind == 2), 10 ** rng.uniform(1, 2.93, n), fit.eta_err)
    fit.phi_err = np.where(outlier & (kind == 2), 10 ** rng.uniform(1, 3.3, n), fit.phi_err)
    many_hits = outlier & (kind == 3) & (rng.random(n) < 0.7)  # loopers with every hit twice
    few_hits = outlier & (kind == 3) & ~many_hits  # 2-hit remnants, ndof -2
    hp.n_pixel = np.where(many_hits, rng.integers(6, 16, n), np.where(few_hits, 1, hp.n_pixel))
    hp.n_strip = np.where(many_hits, rng.integers(30, 54, n), np.where(few_hits, 1, hp.n_strip))
    hp.ndof = np.where(
        many_hits | few_hits, np.minimum(2.0 * hp.n_pixel + hp.n_strip - 5, 68), hp.ndof
    )
    hp.n_pixel_lay = np.minimum(hp.n_pixel_lay, hp.n_pixel)
    hp.n_strip_lay = np.minimum(hp.n_strip_lay, hp.n_strip)
    hp.n_3d_lay = np.minimum(hp.n_3d_lay, hp.n_pixel_lay + hp.n_strip_lay)
    lost = outlier & (kind == 4)
    hp.n_inner_lost = np.where(lost, rng.integers(5, 15, n), hp.n_inner_lost)
    hp.n_outer_lost = np.where(lost, rng.integers(5, 15, n), hp.n_outer_lost)
    return outlier & (kind == 5)


def add_nan(rng: np.random.Generator, arrays: dict[str, np.ndarray]) -> None:
    """A few NaN, as real ntuples have: into the final arrays, so they do not propagate."""
    n = len(arrays["trk_pt"])
    rows = np.flatnonzero(rng.random(n) < NAN_FRACTION)
    branch = rng.integers(0, len(NAN_BRANCHES), len(rows))
    for k, name in enumerate(NAN_BRANCHES):
        arrays[name][rows[branch == k]] = np.nan
