"""Track kinematics and origin: pt, direction and charge; production point and pointing.

True tracks follow falling pt spectra that turn on above each iteration's seeding threshold;
the detached iterations find mostly secondaries (decays, conversions, nuclear interactions)
produced at some radius. Fakes are softer (random hits line up more easily on a strongly curved
helix), more forward (where the occupancy is highest), and point anywhere inside the seeding
region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthetic.detector import wrap
from synthetic.events import Events
from synthetic.tables import DISPLACED_ITERATIONS, NAMES, Process, column
from synthetic.truth import COMBINATORIAL, Truth

# Fakes are softer: random hits line up more easily on a strongly curved helix.
FAKE_SOFTENING = 1.3  # added to the power-law index of the pt spectrum
STRAIGHT_FAKE_FRACTION = 0.005  # high-pt fakes from nearly aligned random hits
FAKE_FORWARD_FRACTION = 0.70  # fakes with |eta| > 1.2
MAX_PRODUCTION_RADIUS = 65.0  # cm: beyond it no iteration seeds


@dataclass
class Kinematics:
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    q: np.ndarray
    straight: np.ndarray  # the high-pt fakes from aligned random hits


def track_kinematics(
    rng: np.random.Generator, proc: Process, ev: Events, truth: Truth
) -> Kinematics:
    n, it, is_true = len(ev.evt), truth.it, truth.is_true
    is_jetcore = np.asarray(NAMES)[it] == "jetCoreRegionalStep"
    pt_index = np.where(is_true, proc.pt_index, proc.pt_index + FAKE_SOFTENING)
    pt_index = np.where(is_jetcore, 2.6, pt_index)
    # The seeding becomes efficient over a range above its threshold: the spectrum of each
    # iteration turns on there, then falls as a power law.
    pt_min = column("pt_min")[it] * (0.9 + rng.gamma(2.0, 0.15, n))
    pt = pt_min * rng.random(n) ** (-1 / (pt_index - 1))
    straight = ~is_true & (rng.random(n) < STRAIGHT_FAKE_FRACTION)
    pt = np.where(straight, 10 ** rng.uniform(0.5, 2.3, n), pt)
    electron_pt = 45.6 * np.sqrt(1 - rng.uniform(-1, 1, n) ** 2) * rng.normal(1, 0.08, n)
    pt = np.clip(np.where(truth.is_electron, electron_pt, pt), 0.1, 3000.0)

    forward = rng.random(n) < np.where(is_true, column("forward")[it], FAKE_FORWARD_FRACTION)
    abs_eta = np.where(forward, rng.uniform(1.2, 2.5, n), rng.uniform(0.0, 1.2, n))
    eta = abs_eta * rng.choice([-1.0, 1.0], n)
    phi = rng.uniform(-np.pi, np.pi, n)
    # jetCore tracks sit in the core of a dense, central jet of their event.
    events = len(ev.counts)
    jet_eta, jet_phi = rng.uniform(-1.3, 1.3, events), rng.uniform(-np.pi, np.pi, events)
    eta = np.where(is_jetcore, jet_eta[ev.evt] + rng.normal(0, 0.08, n), eta)
    phi = wrap(np.where(is_jetcore, jet_phi[ev.evt] + rng.normal(0, 0.08, n), phi))
    q = rng.choice(np.array([-1, 1], dtype=np.int32), n)
    return Kinematics(pt=pt, eta=eta, phi=phi, q=q, straight=straight)


@dataclass
class Origin:
    r_prod: np.ndarray  # cm, production radius of true secondaries (0 otherwise)
    dxy0: np.ndarray  # cm, transverse distance of the trajectory from its vertex
    dz0: np.ndarray  # cm, longitudinal distance at the closest approach
    prompt: np.ndarray  # true tracks that come from their vertex (they make the vertices)


def track_origin(
    rng: np.random.Generator,
    proc: Process,
    ev: Events,
    truth: Truth,
    kin: Kinematics,
    raw_vertex: np.ndarray,
) -> Origin:
    n, it = len(ev.evt), truth.it
    boosted = np.isin(it, [NAMES.index(k) for k in DISPLACED_ITERATIONS])
    boost = np.where(boosted, proc.displaced_boost, 1.0)
    displaced_frac = np.minimum(column("displaced")[it] * boost, 1.0)
    is_displaced = truth.is_true & ~truth.is_electron & (rng.random(n) < displaced_frac)
    radius = column("radius")[it] * boost
    r_prod = np.where(is_displaced, np.minimum(rng.exponential(radius), MAX_PRODUCTION_RADIUS), 0.0)
    # Decay products point roughly away from the beam line: |dxy| is a fraction of the radius.
    dxy0 = r_prod * np.sin(rng.normal(0, 0.45, n))
    dz0 = r_prod * rng.normal(0, 0.3, n) * (1 + np.abs(np.sinh(kin.eta)))

    # Fakes: a combinatorial seed lies anywhere in the seeding region, transversely and along
    # the luminous region (not at a vertex). A ghost's pixel seed belongs to a real particle:
    # it points where that particle came from, only its fit is worse (impact.FAKE_PULL).
    fake = ~truth.is_true
    combinatorial = truth.kind == COMBINATORIAL
    region = column("origin_radius")[it]
    half_length = column("origin_half_length")[it]
    fake_dxy = np.where(combinatorial, rng.laplace(0, region, n), 0.0)
    # In high pileup (~50 vertices over the luminous region) most fake seeds still lie near
    # some vertex; the rest anywhere in the seeding region's length.
    near_vertex = rng.random(n) < 0.85
    z_seed = np.where(
        near_vertex,
        rng.laplace(0, 0.15, n),
        ev.bsp[2][ev.evt] - ev.raw_xyz[2][raw_vertex] + rng.uniform(-half_length, half_length),
    )
    fake_dz = np.where(combinatorial, z_seed, 0.0)
    dxy0 = np.where(fake, fake_dxy, dxy0)
    dz0 = np.where(fake, fake_dz, dz0)
    prompt = truth.is_true & (np.abs(dxy0) < 0.1)
    return Origin(r_prod=r_prod, dxy0=dxy0, dz0=dz0, prompt=prompt)
