"""Fit quality: the track parameters' errors, the chi2, and the fitted momentum states.

The errors come from the hit pattern alone, as the Kalman fit's covariance does: the lever arm
between first and last hit and the number of measurements set the curvature error, the pixel
hits near the beam line the impact-parameter errors; multiple scattering adds ~1/p terms. True
tracks fit well (hit errors are slightly conservative, so chi2/ndof peaks below 1) except those
that interacted or picked up a wrong hit; fakes fit badly, combinatorial ones worst.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthetic.detector import bend
from synthetic.hits import HitPattern
from synthetic.kinematics import Kinematics
from synthetic.truth import COMBINATORIAL, GHOST, TRUE, Truth, by_kind

# Median chi2/ndof scale and its log-spread, by Truth.kind.
CHI2_SCALE = {TRUE: (0.8, 0.15), COMBINATORIAL: (2.2, 0.6), GHOST: (2.5, 0.5)}
TRUE_CHI2_TAIL = 0.06  # true tracks with a wrong hit, an interaction or hard scattering


@dataclass
class Fit:
    rel_pt_err: np.ndarray
    pt_err: np.ndarray
    dxy_err: np.ndarray
    dz_err: np.ndarray
    phi_err: np.ndarray
    lambda_err: np.ndarray
    eta_err: np.ndarray
    nchi2: np.ndarray
    nchi2_1d: np.ndarray


def fit_quality(rng: np.random.Generator, truth: Truth, kin: Kinematics, hp: HitPattern) -> Fit:
    n, pt, eta = len(truth.it), kin.pt, kin.eta
    sin_theta = 1 / np.cosh(eta)
    lever = np.maximum(hp.r_last - hp.r_first, 3.0) / 100  # m
    measurements = 2 * hp.n_pixel + hp.n_strip
    # Curvature error: the hit resolution term (~pt / L^2) and the multiple-scattering term
    # (~1 / L, more material forward).
    resolution = 1.4e-4 * pt / lever**2 * np.sqrt(24.0 / np.maximum(measurements + 4, 6))
    scattering = 0.007 / lever * np.sqrt(np.cosh(eta))
    noise = np.exp(rng.normal(0, 0.08, (5, n)))  # the covariance also depends on the details
    rel_pt_err = np.hypot(resolution, scattering) * noise[0]
    rel_pt_err = np.where(kin.straight, rng.uniform(0.3, 2.0, n), rel_pt_err)
    # Impact parameters: the first pixel hit and its distance from the beam line rule.
    pixel = np.array([8.0, 3.0, 1.6, 1.15, 1.0])[hp.n_pixel_lay] * (1 + hp.r_first / 30)
    # Phase-1 pixel (first layer at 2.9 cm): ~10 (20) um transverse (longitudinal) at high pt,
    # multiple scattering ~55 (80) um / pt[GeV] in the central barrel.
    dxy_err = np.hypot(0.0010, 0.0055 / (pt * np.sqrt(sin_theta))) * pixel * noise[1]
    dz_err = np.hypot(0.0020, 0.0080 / (pt * sin_theta**1.3)) * pixel * noise[2]
    short = np.sqrt(np.maximum(1.0 / lever, 1.0))
    phi_err = np.hypot(1e-4, 2.0e-3 / pt) * np.sqrt(pixel) * short * noise[3]
    lambda_err = np.hypot(2e-4, 1.8e-3 / (pt * np.sqrt(sin_theta))) * np.sqrt(pixel) * noise[4]

    median, spread = by_kind(CHI2_SCALE, truth.kind).T
    scale = median * np.exp(spread * rng.normal(0, 1, n))
    # Interacting true tracks (stopped) pick up wrong hits more often.
    tail = truth.is_true & (rng.random(n) < np.where(hp.stopped, 2, 1) * TRUE_CHI2_TAIL)
    tail |= truth.is_electron & (rng.random(n) < 0.3)  # bremsstrahlung
    scale = np.where(tail, scale * rng.uniform(1.5, 4.0, n), scale)
    dof = np.maximum(hp.ndof, 1)
    nchi2 = rng.chisquare(dof) / dof * scale
    return Fit(
        rel_pt_err=rel_pt_err,
        pt_err=pt * rel_pt_err,
        dxy_err=dxy_err,
        dz_err=dz_err,
        phi_err=phi_err,
        lambda_err=lambda_err,
        eta_err=lambda_err * np.cosh(eta),
        nchi2=nchi2,
        nchi2_1d=nchi2 * rng.uniform(0.85, 1.0, n),
    )


@dataclass
class MomentumStates:
    inner: tuple[np.ndarray, np.ndarray, np.ndarray]  # px, py, pz at the first hit
    outer: tuple[np.ndarray, np.ndarray, np.ndarray]  # at the last hit


def momentum_states(
    rng: np.random.Generator, truth: Truth, kin: Kinematics, hp: HitPattern, fit: Fit
) -> MomentumStates:
    """The smoothed fit's states at the first and last hit.

    They scatter about the helix by about the fit's own precision. Energy loss (~15 MeV through
    the tracker, more forward) lowers the outer pt; electrons lose much more by bremsstrahlung.
    A ghost's two pieces belong to different particles: its outer state has a kink.
    """
    n, pt, eta = len(truth.it), kin.pt, kin.eta
    p = pt * np.cosh(eta)
    loss = 0.015 * np.sqrt(np.cosh(eta))
    outer_pt = pt * np.maximum(1 - loss / p, 0.5)
    outer_pt = np.where(truth.is_electron, outer_pt * rng.uniform(0.4, 0.97, n), outer_pt)
    precision = np.minimum(fit.rel_pt_err, 0.3)
    spread = np.where(truth.kind == TRUE, 0.5, np.where(truth.kind == GHOST, 2.0, 1.0))
    outer_pt = outer_pt * np.exp(spread * precision * rng.normal(0, 1, n))
    inner_pt = pt * (1 - 0.001 / p) * np.exp(0.3 * precision * rng.normal(0, 1, n))
    phi_inner = bend(kin.phi, kin.q, pt, hp.r_first)
    phi_outer = bend(kin.phi, kin.q, pt, hp.r_last)
    sinh = np.sinh(eta)
    return MomentumStates(
        inner=(inner_pt * np.cos(phi_inner), inner_pt * np.sin(phi_inner), inner_pt * sinh),
        outer=(outer_pt * np.cos(phi_outer), outer_pt * np.sin(phi_outer), outer_pt * sinh),
    )
