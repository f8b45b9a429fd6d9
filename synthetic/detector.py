"""The detector the synthetic tracks cross: CMS Phase-1 tracker layers, 3.8 T field, beam spot.

Every strip and pixel "layer" is a barrel-equivalent radius: a forward track crosses disks
instead, whose count and reach the functions below express as barrel-equivalent layers.
"""

from __future__ import annotations

import numpy as np

PIXEL_RADII = np.array([2.9, 6.8, 10.9, 16.0])  # Phase-1 BPix layers, cm
STRIP_RADII = np.array([25.5, 33.9, 41.9, 49.8, 60.8, 69.2, 78.0, 86.8, 96.5, 108.0])  # TIB, TOB
LAYER_RADII = np.concatenate([PIXEL_RADII, STRIP_RADII])
N_PIXEL_LAYERS, N_LAYERS = len(PIXEL_RADII), len(LAYER_RADII)
BFIELD_CURVATURE = 0.3 * 3.8  # 1/R [1/m] = 0.3 B / pt [GeV]
TRACKER_HALF_LENGTH = 280.0  # cm: the last TEC disk
BEAMSPOT = (0.0107, 0.0417, 0.35)  # cm, a typical Run-3 beam spot position
BEAMSPOT_SIGMA_Z = 3.5  # cm, the luminous region's length
NO_VERTEX = (0.0, 0.0, -99999.0)  # TrackingNtuple's point when no good vertex exists
# Double-sided (stereo) modules give a second 1D hit: TIB 1-2, TOB 1-2, TID/TEC rings 1, 2, 5.
STEREO_FRACTION = 0.4
# Dead or switched-off modules (Run-2/3 operation): a crossed one gives an "inactive" hit.
DEAD_PIXEL_FRACTION, DEAD_STRIP_FRACTION = 0.03, 0.02


def strip_layers_crossed(abs_eta: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """Barrel-equivalent strip layers a prompt track crosses outward (0..10).

    Barrel: TIB + TOB, 10 layers; the barrel-endcap transition crosses the most (TIB, TID, TOB,
    TEC), the far forward fewer TEC disks. Low-pt tracks curl up (loopers): in the barrel they
    reach the layers inside their diameter 2R, in the endcaps they spiral along z through the
    disks as long as 2R exceeds the disks' inner radius.
    """
    geometry = np.interp(abs_eta, [0.0, 0.9, 1.4, 1.9, 2.2, 2.5], [10, 10, 10, 9.5, 8, 5.5])
    diameter = 2 * pt / BFIELD_CURVATURE * 100  # cm
    barrel_reach = np.searchsorted(STRIP_RADII, diameter) / len(STRIP_RADII)
    endcap_reach = np.clip((diameter - 20.0) / 40.0, 0.0, 1.0)
    barrelness = np.clip((1.6 - abs_eta) / 0.6, 0.0, 1.0)
    reach = barrelness * barrel_reach + (1 - barrelness) * endcap_reach
    return np.round(geometry * reach).astype(np.int64)


def overlap_fraction(abs_eta: np.ndarray) -> np.ndarray:
    """Extra hits per crossed strip layer from overlapping modules: most in the transition."""
    return 0.04 + 0.30 * np.exp(-0.5 * ((abs_eta - 1.3) / 0.25) ** 2)


def layer_index(radius: np.ndarray) -> np.ndarray:
    """Number of layers at radii below ``radius``."""
    return np.searchsorted(LAYER_RADII, radius)


def hit_radius(layer: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Transverse radius of a hit on layer ``layer`` (an endcap disk for forward tracks)."""
    endcap = TRACKER_HALF_LENGTH / np.maximum(np.abs(np.sinh(eta)), 1e-3)
    return np.minimum(LAYER_RADII[np.clip(layer, 0, N_LAYERS - 1)], endcap)


def wrap(phi: np.ndarray) -> np.ndarray:
    """Angle in [-pi, pi)."""
    return np.mod(phi + np.pi, 2 * np.pi) - np.pi


def bend(phi: np.ndarray, q: np.ndarray, pt: np.ndarray, radius_cm: np.ndarray) -> np.ndarray:
    """Momentum direction after bending in the 3.8 T field out to a radius (phi - q asin(R/2r))."""
    sine = np.minimum(BFIELD_CURVATURE * radius_cm / 100 / (2 * pt), 1.0)
    return wrap(phi - q * np.arcsin(sine))


def dxy_dz(x, y, z, px, py, pz, pt, point) -> tuple[np.ndarray, np.ndarray]:
    """reco::TrackBase::dxy(point) and dz(point) of tracks with reference (x, y, z)."""
    dx, dy, dz = x - point[0], y - point[1], z - point[2]
    return (-dx * py + dy * px) / pt, dz - (dx * px + dy * py) / pt * pz / pt
