"""The hit pattern: which layers a track crossed, where it has hits, holes and missing hits.

Trajectory building in CMS goes outward from the seed layer by layer; a crossed layer without a
compatible hit is a lost hit ("hole"), one in a dead module an inactive hit, and building stops
after two consecutive misses. The final fit then looks for layers the track should have crossed
outside its hits: inward down to its closest approach to the beam line (MISSING_INNER) and
outward beyond its last hit (MISSING_OUTER), as TrackProducerBase's second hit pattern does.

- True tracks stop early when they interact in the material (hadrons, ~1-3 % per layer, more
  in the forward material); otherwise they reach the end of the tracker or curl up.
- Combinatorial fakes find a compatible random hit on the next layer only now and then: they
  stop after a few layers and have more holes.
- Ghosts run long, with a few more holes than true tracks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthetic import detector as det
from synthetic.kinematics import Kinematics, Origin
from synthetic.tables import ITERATIONS, NAMES, column
from synthetic.truth import COMBINATORIAL, GHOST, TRUE, Truth, by_kind

# Per crossed strip layer: P(building stops there), P(hole), by Truth.kind.
STOP_HAZARD = {TRUE: 0.012, COMBINATORIAL: 0.13, GHOST: 0.07}
HOLE_PROBABILITY = {TRUE: 0.012, COMBINATORIAL: 0.16, GHOST: 0.12}
FAKE_PIXEL_MISS = 0.25  # a fake seed misses one of the pixel layers its iteration seeds from
PIXEL_OVERLAP = 0.1  # second hit in an overlapping pixel module, per layer


@dataclass
class HitPattern:
    n_pixel_lay: np.ndarray
    n_strip_lay: np.ndarray
    n_pixel: np.ndarray
    n_strip: np.ndarray
    n_3d_lay: np.ndarray
    ndof: np.ndarray
    n_lost_lay: np.ndarray
    n_lost: np.ndarray
    n_inactive: np.ndarray
    n_inner_lost: np.ndarray
    n_outer_lost: np.ndarray
    n_inner_inactive: np.ndarray
    n_outer_inactive: np.ndarray
    stopped: np.ndarray  # building stopped before the track left the tracker or curled up
    r_first: np.ndarray  # cm, transverse radius of the first and last hit
    r_last: np.ndarray


def _pixel_layers(
    rng: np.random.Generator, truth: Truth, r_start: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel layers with hits, crossed ones before the first hit, holes between hits."""
    n, it = len(truth.it), truth.it
    crossed = det.N_PIXEL_LAYERS - np.searchsorted(det.PIXEL_RADII, r_start, side="right")
    # Inverse-CDF draw from each iteration's P(nPixelLay): row k of the table shifted by k.
    cum = np.cumsum([ITERATIONS[k].pixel_layers for k in NAMES], axis=1)
    cum = (cum / cum[:, -1:])[:, :-1] + np.arange(len(NAMES))[:, None]
    planned = np.searchsorted(cum.ravel(), it + rng.random(n)) - 4 * it
    miss = ~truth.is_true & (rng.random(n) < FAKE_PIXEL_MISS)
    n_lay = np.maximum(np.minimum(planned, crossed) - miss, 0)
    skipped = crossed - n_lay
    # A pixel-less track starts in the strips: every crossed pixel layer lies before it. A
    # true track that skips a pixel layer mostly lost its innermost hit (or its module is
    # dead); a fake seed lacks a hit anywhere.
    inner = np.where(n_lay == 0, skipped, rng.binomial(skipped, np.where(truth.is_true, 0.8, 0.5)))
    return n_lay, inner, skipped - inner


def _strip_layers(
    rng: np.random.Generator,
    truth: Truth,
    kin: Kinematics,
    r_start: np.ndarray,
    n_pixel_lay: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """First strip layer, layers reached before building stopped, holes, layers left over."""
    n, kind = len(truth.it), truth.kind
    abs_eta = np.abs(kin.eta)
    geometric_end = det.strip_layers_crossed(abs_eta, kin.pt)
    inside = np.searchsorted(det.STRIP_RADII, r_start)
    # Strip-seeded fakes start on their seeding layers (TIB/TID, or TOB/TEC for tobTecStep) or,
    # rebuilt inward from the seed, on some layer inside them.
    seeded = (column("first_strip")[truth.it] * rng.random(n) ** 0.5 + rng.random(n)).astype(int)
    first = np.where(~truth.is_true & (n_pixel_lay == 0), np.maximum(inside, seeded), inside)
    # Every track has the hits its trajectory filter demands (min_hits): a seed whose helix
    # cannot reach that many layers never becomes a track.
    need = np.maximum(column("min_hits")[truth.it] - n_pixel_lay, 0)
    crossable = np.minimum(np.maximum(geometric_end - first, need), len(det.STRIP_RADII) - first)
    hazard = by_kind(STOP_HAZARD, kind) * np.where(kind == TRUE, 1 + 0.6 * abs_eta, 1.0)
    hazard = np.where(truth.is_electron, hazard + 0.04, hazard)  # hard bremsstrahlung
    reached = np.minimum(rng.geometric(hazard) - 1, crossable)
    reached = np.maximum(reached, np.minimum(need, crossable))
    holes = rng.binomial(np.maximum(reached - 1, 0), by_kind(HOLE_PROBABILITY, kind))
    holes = np.minimum(holes, np.maximum(reached - need, 0))  # still enough hits
    return first, reached, holes, crossable - reached


def hit_pattern(
    rng: np.random.Generator, truth: Truth, kin: Kinematics, origin: Origin
) -> HitPattern:
    n = len(truth.it)
    n_pixel_lay, pixel_inner, pixel_holes = _pixel_layers(rng, truth, origin.r_prod)
    first_strip, reached, strip_holes, left = _strip_layers(
        rng, truth, kin, origin.r_prod, n_pixel_lay
    )
    n_strip_lay = reached - strip_holes
    stopped = left > 0

    # First and last hit; the inward search covers the layers between the closest approach to
    # the beam line and the first hit (for a secondary also those inside its production point).
    first_pixel = det.N_PIXEL_LAYERS - (n_pixel_lay + pixel_inner + pixel_holes)
    first_layer = np.where(
        n_pixel_lay > 0, first_pixel + pixel_inner, det.N_PIXEL_LAYERS + first_strip
    )
    last_layer = np.where(
        reached > 0, det.N_PIXEL_LAYERS + first_strip + reached - 1, det.N_PIXEL_LAYERS - 1
    )
    inward = np.maximum(first_layer - det.layer_index(np.abs(origin.dxy0)), 0)
    # Twice the dead-module fraction: a dead module is one reason why a layer has no hit.
    inner_inactive = rng.binomial(inward, 2 * det.DEAD_PIXEL_FRACTION)
    outer_inactive = rng.binomial(left, det.DEAD_STRIP_FRACTION)
    # The outward search finds a module on most of the layers left (not in the gaps between
    # modules, nor where a wrongly fitted fake leaves the layer's acceptance); tracks that left
    # the tracker still get an occasional missing outer hit at module edges.
    found = rng.binomial(left - outer_inactive, np.where(truth.is_true, 0.9, 0.6))
    n_outer_lost = np.where(stopped, found, rng.poisson(0.1, n))
    n_outer_inactive = outer_inactive + rng.poisson(0.03, n)

    n_pixel = n_pixel_lay + rng.binomial(n_pixel_lay, PIXEL_OVERLAP)
    n_stereo = rng.binomial(n_strip_lay, det.STEREO_FRACTION)
    n_strip = (
        n_strip_lay + n_stereo + rng.binomial(n_strip_lay, det.overlap_fraction(np.abs(kin.eta)))
    )
    n_lost_lay = pixel_holes + strip_holes
    inactive = rng.binomial(n_strip_lay, det.DEAD_STRIP_FRACTION) + rng.binomial(
        n_pixel_lay, det.DEAD_PIXEL_FRACTION
    )
    return HitPattern(
        n_pixel_lay=n_pixel_lay,
        n_strip_lay=n_strip_lay,
        n_pixel=n_pixel,
        n_strip=n_strip,
        n_3d_lay=n_pixel_lay + n_stereo,
        ndof=(2 * n_pixel + n_strip - 5).astype(np.float64),
        n_lost_lay=n_lost_lay,
        n_lost=n_lost_lay + rng.binomial(n_lost_lay, 0.2),  # both sides of a stereo layer
        n_inactive=inactive,
        n_inner_lost=inward - inner_inactive,
        n_outer_lost=np.minimum(n_outer_lost, 14),
        n_inner_inactive=inner_inactive,
        n_outer_inactive=n_outer_inactive,
        stopped=stopped,
        r_first=det.hit_radius(first_layer, kin.eta),
        r_last=np.maximum(
            det.hit_radius(last_layer, kin.eta), det.hit_radius(first_layer, kin.eta)
        ),
    )
