"""Impact parameters: the fitted track's reference point and its distances to the beam spot,
the first vertex and the closest good vertex, and the vertex a track was fitted in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthetic.detector import NO_VERTEX, dxy_dz
from synthetic.events import Events, Vertices, closest_vertex
from synthetic.fit import Fit
from synthetic.kinematics import Kinematics, Origin
from synthetic.truth import COMBINATORIAL, GHOST, Truth

PULL_TAIL = 0.05  # true tracks whose measured impact parameters scatter 3x their errors
# A fake's fitted parameters estimate no particle's: its impact parameters scatter several
# times its nominal errors (median factor, by Truth.kind).
FAKE_PULL = {COMBINATORIAL: 1.6, GHOST: 1.5}


@dataclass
class ImpactParameters:
    refpoint: tuple[np.ndarray, np.ndarray, np.ndarray]
    dxy: np.ndarray  # w.r.t. the beam spot
    dz: np.ndarray
    dxy_pv: np.ndarray  # w.r.t. the first vertex
    dz_pv: np.ndarray
    dxy_closest: np.ndarray  # w.r.t. the closest good vertex in z
    dz_closest: np.ndarray
    vtx_idx: np.ndarray  # the vertex the track was fitted in, or -1


def impact_parameters(
    rng: np.random.Generator,
    ev: Events,
    vertices: Vertices,
    raw_vertex: np.ndarray,
    truth: Truth,
    kin: Kinematics,
    origin: Origin,
    fit: Fit,
    no_vertex: np.ndarray,
) -> ImpactParameters:
    """``no_vertex``: tracks whose closest-vertex search found nothing (ntuple's default)."""
    n, phi, eta, pt = len(ev.evt), kin.phi, kin.eta, kin.pt
    fake_pull = np.where(truth.kind == COMBINATORIAL, FAKE_PULL[COMBINATORIAL], FAKE_PULL[GHOST])
    fake_pull = fake_pull * np.exp(0.5 * rng.normal(0, 1, n))
    pull = np.where(truth.is_true, np.where(rng.random(n) < PULL_TAIL, 3.0, 1.0), fake_pull)
    dxy_v = origin.dxy0 + rng.normal(0, 1, n) * fit.dxy_err * pull
    dz_v = origin.dz0 + rng.normal(0, 1, n) * fit.dz_err * pull

    # Reference point: displaced from its vertex by (dxy_v, dz_v), then moved along the track
    # to the point of closest approach to the beam spot (as for generalTracks).
    raw = [c[raw_vertex] for c in ev.raw_xyz]
    x, y, z = raw[0] - dxy_v * np.sin(phi), raw[1] + dxy_v * np.cos(phi), raw[2] + dz_v
    bsp = [c[ev.evt] for c in ev.bsp]
    along = (x - bsp[0]) * np.cos(phi) + (y - bsp[1]) * np.sin(phi)
    x, y, z = x - along * np.cos(phi), y - along * np.sin(phi), z - along * np.sinh(eta)
    momentum = (pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), pt)
    dxy, dz = dxy_dz(x, y, z, *momentum, bsp)
    first = vertices.offsets[:-1][ev.evt]
    pv = [vertices.arrays[f"vtx_{c}"][first] for c in "xyz"]
    dxy_pv, dz_pv = dxy_dz(x, y, z, *momentum, pv)

    # Closest good vertex in z (the kept ones; the beam-spot fake vertex is not good).
    keep = vertices.keep
    good = vertices.offsets[:-1][ev.raw_evt[keep]] + vertices.local_index[keep]
    best = closest_vertex(ev.evt, z, ev.raw_evt[keep], ev.raw_xyz[2][keep], good)
    has_pv = (best >= 0) & ~no_vertex
    closest = tuple(
        np.where(has_pv, vertices.arrays[f"vtx_{c}"][np.maximum(best, 0)], none)
        for c, none in zip("xyz", NO_VERTEX, strict=True)
    )
    dxy_closest, dz_closest = dxy_dz(x, y, z, *momentum, closest)
    # A track whose own search failed (its event has good vertices) sometimes keeps the
    # default value itself; in an event without any, every track is measured from the point.
    sentinel = no_vertex & (best >= 0) & (rng.random(n) < 0.5)
    dz_closest = np.where(sentinel, NO_VERTEX[2], dz_closest)

    # Vertex the track was fitted in: most prompt true tracks of a kept vertex, few others.
    in_vertex = keep[raw_vertex] & (rng.random(n) < np.where(origin.prompt, 0.92, 0.1))
    vtx_idx = np.where(in_vertex, vertices.local_index[raw_vertex], -1)
    return ImpactParameters(
        refpoint=(x, y, z),
        dxy=dxy,
        dz=dz,
        dxy_pv=dxy_pv,
        dz_pv=dz_pv,
        dxy_closest=dxy_closest,
        dz_closest=dz_closest,
        vtx_idx=vtx_idx,
    )
